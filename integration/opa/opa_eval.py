"""Evaluates Rego with OPA's own engine (opa-golib-python-bindings, OPA v1.20.2), for meshgate's
differential tests.

stdin: a JSON list of jobs, each {"modules": [{"path", "source"}], "data": {...},
"queries": ["data.pkg.violation", ...], "inputs": [...]}. stdout: per job, per input, per
query: {"value": ...}, {"undefined": true} or {"error": "..."}.

OPA 1.x removed the deprecated builtins `any` and `all` that Rego v0 templates still call;
meshgate's `to_v1` renames their calls `v0_all`/`v0_any`, registered here with the old meaning.
"""

import json
import sys

from opa_bindings import OpaEngine, OpaError, OpaUndefinedError


def _all(xs):
    return all(x is True for x in xs)


def _any(xs):
    return any(x is True for x in xs)


def run(job):
    engine = OpaEngine()
    try:
        engine.register_function("v0_all", _all, arity=1)
        engine.register_function("v0_any", _any, arity=1)
        for module in job["modules"]:
            engine.add_policy(module["path"], module["source"])
        engine.add_data(job.get("data") or {})
        out = []
        for input_ in job["inputs"]:
            answers = []
            for query in job["queries"]:
                path = query[len("data."):] if query.startswith("data.") else query
                try:
                    answers.append({"value": engine.eval_document(path, input_)})
                except OpaUndefinedError:
                    answers.append({"undefined": True})
                except OpaError as e:
                    answers.append({"error": str(e)})
            out.append(answers)
        return out
    except OpaError as e:
        return {"error": str(e)}
    finally:
        engine.close()


def main():
    jobs = json.load(sys.stdin)
    json.dump([run(job) for job in jobs], sys.stdout)


if __name__ == "__main__":
    main()
