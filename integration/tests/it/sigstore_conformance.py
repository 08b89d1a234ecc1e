"""Second opinion on the Sigstore conformance cases: sigstore-python's verifier, offline.

Usage: sigstore_conformance.py CASES_DIR DEFAULT_TRUSTED_ROOT
Prints one line per case it can judge: `<case> ok` or `<case> fail <reason>`. Cases signed
with a managed key (`key.pub`) are skipped: sigstore-python verifies certificates only.
"""

import hashlib
import json
import sys
from pathlib import Path

from sigstore.hashes import Hashed
from sigstore.models import Bundle, TrustedRoot
from sigstore.verify import Verifier, policy
from sigstore_models.common.v1 import HashAlgorithm  # type: ignore[import-not-found]

DEFAULT_IDENTITY = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
    ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
DEFAULT_ISSUER = "https://token.actions.githubusercontent.com"


def read(case: Path, name: str, default: str) -> str:
    path = case / name
    return path.read_text().strip() if path.is_file() else default


def main() -> None:
    cases, default_root = Path(sys.argv[1]), Path(sys.argv[2])
    for case in sorted(p for p in cases.iterdir() if p.is_dir()):
        if (case / "key.pub").exists():
            continue
        artifact = case / "artifact"
        if not artifact.exists():
            artifact = cases / "a.txt"
        root_path = case / "trusted_root.json"
        try:
            root = TrustedRoot.from_file(str(root_path if root_path.exists() else default_root))
            bundle = Bundle.from_json((case / "bundle.sigstore.json").read_bytes())
            digest = hashlib.sha256(artifact.read_bytes()).digest()
            identity = policy.Identity(
                identity=read(case, "identity", DEFAULT_IDENTITY),
                issuer=read(case, "issuer", DEFAULT_ISSUER),
            )
            verifier = Verifier(trusted_root=root)
            if bundle._inner.dsse_envelope is not None:
                # verify_dsse checks the envelope, not what it is about: the subject is ours.
                _, payload = verifier.verify_dsse(bundle, identity)
                subjects = json.loads(payload).get("subject", [])
                if not any(s.get("digest", {}).get("sha256") == digest.hex() for s in subjects):
                    raise ValueError("no statement subject has the artifact's digest")
            else:
                verifier.verify_artifact(
                    Hashed(algorithm=HashAlgorithm.SHA2_256, digest=digest), bundle, identity
                )
            print(f"{case.name} ok", flush=True)
        except Exception as e:  # every refusal is a verdict
            reason = " ".join(str(e).split())[:200]
            print(f"{case.name} fail {type(e).__name__}: {reason}", flush=True)


if __name__ == "__main__":
    main()
