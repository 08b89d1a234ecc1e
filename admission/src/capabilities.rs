//! What a Wasm binary asks of its host and offers it: the imports and exports of a core
//! module, or the WIT interfaces a component imports and exports. Policies judge these
//! (`wasi:sockets/*` is network access, `wasi:filesystem/*` file access, ...), and the
//! proxy-wasm check reads them to see what a filter needs from Envoy.

use serde::Serialize;
use wasmparser::{Encoding, Parser, Payload};

use crate::config::ModuleKind;

/// Most imports, and most exports, one binary may declare: the facts are cached and handed to
/// every policy, so their size is bounded whatever a registry serves. Real modules declare
/// tens (a proxy-wasm filter ~40, a WASI component ~30).
pub const MAX_NAMES: usize = 1024;

/// The imports and exports of one Wasm binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Component or core module.
    pub kind: ModuleKind,
    /// Component: import names as written (`wasi:sockets/tcp@0.2.0`). Core module:
    /// `module/name` (`wasi_snapshot_preview1/fd_write`, `env/proxy_log`). Sorted, unique.
    pub imports: Vec<String>,
    /// Export names (a component's top-level exports, a module's exports). Sorted, unique.
    pub exports: Vec<String>,
    /// Core modules: the imports that are not functions (memories, tables, globals, tags),
    /// as `module/name`; hosts that only provide functions cannot link them.
    #[serde(skip)]
    pub non_function_imports: Vec<String>,
    /// Core modules: function exports named `proxy_abi_version_*`, in module order (the
    /// proxy takes the first it knows).
    #[serde(skip)]
    pub abi_exports: Vec<String>,
}

impl Capabilities {
    /// Reads a binary; every section must parse (not a full validation). Nested modules and
    /// components of a component are not listed: only what the component itself imports from
    /// its host can reach the host.
    pub fn of(bytes: &[u8]) -> Result<Self, String> {
        if !bytes.starts_with(b"\0asm") {
            return Err("no \\0asm header".into());
        }
        let mut kind = None;
        let mut depth = 0usize;
        let mut imports = Vec::new();
        let mut exports = Vec::new();
        let mut non_function_imports = Vec::new();
        let mut abi_exports = Vec::new();
        let push = |list: &mut Vec<String>, name: String| {
            if list.len() >= MAX_NAMES {
                return Err(format!("more than {MAX_NAMES} imports or exports"));
            }
            list.push(name);
            Ok(())
        };
        for payload in Parser::new(0).parse_all(bytes) {
            let payload = payload.map_err(|e| e.to_string())?;
            match payload {
                Payload::Version { encoding, .. } => {
                    depth += 1;
                    if depth == 1 {
                        kind = Some(match encoding {
                            Encoding::Component => ModuleKind::Component,
                            Encoding::Module => ModuleKind::Module,
                        });
                    }
                }
                Payload::End(_) => depth = depth.saturating_sub(1),
                Payload::ImportSection(reader) if depth == 1 => {
                    for import in reader {
                        let import = import.map_err(|e| e.to_string())?;
                        let name = format!("{}/{}", import.module, import.name);
                        if !matches!(import.ty, wasmparser::TypeRef::Func(_)) {
                            push(&mut non_function_imports, name.clone())?;
                        }
                        push(&mut imports, name)?;
                    }
                }
                Payload::ExportSection(reader) if depth == 1 => {
                    for export in reader {
                        let export = export.map_err(|e| e.to_string())?;
                        if export.kind == wasmparser::ExternalKind::Func
                            && export.name.starts_with("proxy_abi_version_")
                        {
                            push(&mut abi_exports, export.name.to_string())?;
                        }
                        push(&mut exports, export.name.to_string())?;
                    }
                }
                Payload::ComponentImportSection(reader) if depth == 1 => {
                    for import in reader {
                        let import = import.map_err(|e| e.to_string())?;
                        push(&mut imports, import.name.0.to_string())?;
                    }
                }
                Payload::ComponentExportSection(reader) if depth == 1 => {
                    for export in reader {
                        let export = export.map_err(|e| e.to_string())?;
                        push(&mut exports, export.name.0.to_string())?;
                    }
                }
                _ => {}
            }
        }
        let kind = kind.ok_or_else(|| "no Wasm version header".to_string())?;
        for list in [&mut imports, &mut exports, &mut non_function_imports] {
            list.sort_unstable();
            list.dedup();
        }
        Ok(Self {
            kind,
            imports,
            exports,
            non_function_imports,
            abi_exports,
        })
    }

    /// Adds another layer's names (an artifact with several Wasm layers); the kind stays the
    /// first layer's. More than [`MAX_NAMES`] together is refused, never cut: a cut list would
    /// hide what the last layer imports.
    pub fn merge(&mut self, other: Capabilities) -> Result<(), String> {
        for (list, more) in [
            (&mut self.imports, other.imports),
            (&mut self.exports, other.exports),
            (&mut self.non_function_imports, other.non_function_imports),
            (&mut self.abi_exports, other.abi_exports),
        ] {
            list.extend(more);
            list.sort_unstable();
            list.dedup();
            if list.len() > MAX_NAMES {
                return Err(format!(
                    "more than {MAX_NAMES} imports or exports across its Wasm layers"
                ));
            }
        }
        Ok(())
    }

    /// The facts policies receive: `{"kind", "imports", "exports"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": self.kind.as_str(),
            "imports": self.imports,
            "exports": self.exports,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_core_module_lists_module_slash_name() {
        let bytes = wat::parse_str(
            r#"(module
                (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                (import "env" "proxy_log" (func (param i32 i32 i32) (result i32)))
                (import "env" "memory" (memory 1))
                (func (export "proxy_abi_version_0_2_1"))
                (func (export "_initialize")))"#,
        )
        .unwrap();
        let caps = Capabilities::of(&bytes).unwrap();
        assert_eq!(caps.kind, ModuleKind::Module);
        assert_eq!(
            caps.imports,
            [
                "env/memory",
                "env/proxy_log",
                "wasi_snapshot_preview1/fd_write"
            ]
        );
        assert_eq!(caps.exports, ["_initialize", "proxy_abi_version_0_2_1"]);
        assert_eq!(caps.non_function_imports, ["env/memory"]);
    }

    #[test]
    fn a_component_lists_its_own_interfaces_not_its_inner_modules() {
        let bytes = wat::parse_str(
            r#"(component
                (import "wasi:sockets/tcp@0.2.0" (instance))
                (import "wasi:filesystem/types@0.2.0" (instance))
                (core module $inner (import "hidden" "call" (func)))
                (component $nested (import "wasi:http/outgoing-handler@0.2.0" (instance)))
            )"#,
        )
        .unwrap();
        let caps = Capabilities::of(&bytes).unwrap();
        assert_eq!(caps.kind, ModuleKind::Component);
        assert_eq!(
            caps.imports,
            ["wasi:filesystem/types@0.2.0", "wasi:sockets/tcp@0.2.0"]
        );
        assert_eq!(
            caps.to_json(),
            serde_json::json!({"kind": "component", "imports": caps.imports, "exports": []})
        );
    }

    #[test]
    fn garbage_and_oversized_name_lists_are_refused() {
        assert!(Capabilities::of(b"not wasm").is_err());
        assert!(Capabilities::of(b"\0asm\x01\0\0\0\x02\xff").is_err());
        let many: String = (0..=MAX_NAMES)
            .map(|i| format!("(import \"m\" \"f{i}\" (func))"))
            .collect();
        let bytes = wat::parse_str(format!("(module {many})")).unwrap();
        assert!(Capabilities::of(&bytes).unwrap_err().contains("more than"));
        // Layers that fit one by one but not together are refused, never cut.
        let half = |prefix: &str| {
            let imports: String = (0..MAX_NAMES / 2 + 1)
                .map(|i| format!("(import \"{prefix}\" \"f{i}\" (func))"))
                .collect();
            Capabilities::of(&wat::parse_str(format!("(module {imports})")).unwrap()).unwrap()
        };
        let mut first = half("a");
        assert!(
            first
                .merge(half("b"))
                .unwrap_err()
                .contains("across its Wasm layers")
        );
    }
}
