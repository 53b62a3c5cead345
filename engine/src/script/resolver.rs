//! The module resolver: `import "name"` sees `scripts/lib/name.rhai` and nothing else.
//!
//! Rhai's default resolver loads any `.rhai` file relative to the working directory, which would
//! let a script pull in arbitrary files. This one holds the library compiled at host
//! construction, keyed by file stem; any other path (`"../../etc/passwd"`, `"/tmp/x"`) is an
//! error that lists what can be imported. Modules are evaluated once and cached; a module may
//! import another library module, and an import cycle is an error instead of a stack overflow.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, RwLock};

use rhai::module_resolvers::ModuleResolver;
use rhai::{Engine, EvalAltResult, Module, Position, Scope, Shared, AST};

use super::ScriptError;

/// One compiled library file.
pub struct LibModule {
    /// How errors name it, e.g. `scripts/lib/datatypes.rhai`.
    pub label: String,
    /// The compiled module source.
    pub ast: AST,
}

/// Resolves imports against the compiled `scripts/lib` modules only.
pub struct LibResolver {
    dir: String,
    /// By import name; a file that did not compile is kept as its error, which an import of it
    /// gives back.
    modules: BTreeMap<String, Result<LibModule, ScriptError>>,
    cache: RwLock<HashMap<String, Shared<Module>>>,
    loading: Mutex<Vec<String>>,
}

impl LibResolver {
    /// A resolver over `modules` (by import name), found in `dir` (for messages).
    pub fn new(dir: String, modules: BTreeMap<String, Result<LibModule, ScriptError>>) -> Self {
        LibResolver {
            dir,
            modules,
            cache: RwLock::new(HashMap::new()),
            loading: Mutex::new(Vec::new()),
        }
    }

    /// The import names available.
    pub fn names(&self) -> Vec<String> {
        self.modules.keys().cloned().collect()
    }

    /// The label of a module, for errors.
    pub fn label(&self, name: &str) -> Option<&str> {
        match self.modules.get(name)? {
            Ok(m) => Some(m.label.as_str()),
            Err(e) => Some(e.file.as_str()),
        }
    }

    fn not_found(&self, path: &str, pos: Position) -> Box<EvalAltResult> {
        let available = if self.modules.is_empty() {
            "none".to_owned()
        } else {
            self.modules
                .keys()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        EvalAltResult::ErrorRuntime(
            format!(
                "cannot import {path:?}: import only loads modules from {} by name (available: {available})",
                self.dir
            )
            .into(),
            pos,
        )
        .into()
    }
}

impl ModuleResolver for LibResolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        let name = path.strip_suffix(".rhai").unwrap_or(path);
        if let Some(m) = self.cache.read().ok().and_then(|c| c.get(name).cloned()) {
            return Ok(m);
        }
        let lib = match self.modules.get(name) {
            Some(Ok(lib)) => lib,
            Some(Err(broken)) => {
                return Err(EvalAltResult::ErrorRuntime(
                    format!("cannot import {path:?}: {broken}").into(),
                    pos,
                )
                .into())
            }
            None => return Err(self.not_found(path, pos)),
        };
        {
            let mut loading = self.loading.lock().map_err(|_| "module loader poisoned")?;
            if loading.iter().any(|n| n == name) {
                let chain = loading.join(" -> ");
                return Err(EvalAltResult::ErrorRuntime(
                    format!("import cycle: {chain} -> {name}").into(),
                    pos,
                )
                .into());
            }
            loading.push(name.to_owned());
        }
        let result = Module::eval_ast_as_new(Scope::new(), &lib.ast, engine);
        if let Ok(mut loading) = self.loading.lock() {
            loading.retain(|n| n != name);
        }
        let mut module = result
            .map_err(|e| Box::new(EvalAltResult::ErrorInModule(lib.label.clone(), e, pos)))?;
        module.set_id(lib.label.as_str());
        module.build_index();
        let module: Shared<Module> = module.into();
        if let Ok(mut c) = self.cache.write() {
            c.insert(name.to_owned(), module.clone());
        }
        Ok(module)
    }
}
