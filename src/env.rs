//! The process environment behind a trait (tests pass a map instead of mutating it), and whether
//! loading a config reads the secrets it names. The bottom of the module graph: every module that
//! reads a variable or a credential file imports it from here.

/// Environment lookups, behind a trait so tests pass a map instead of mutating the process
/// environment.
pub trait Env {
    /// The value of `name`, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for std::collections::HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Whether loading a config reads keygate's own credential (the variable or file that
/// `upstream.credential` names).
#[derive(Clone, Copy)]
pub enum Secrets<'a> {
    /// Read it, through this environment: what `serve` needs.
    Read(&'a dyn Env),
    /// Check only that it is configured, never read it: what `check` and `explain` need, so a CI
    /// pipeline can validate a config without holding secrets.
    Skip,
}

impl std::fmt::Debug for Secrets<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Secrets::Read(_) => "Secrets::Read",
            Secrets::Skip => "Secrets::Skip",
        })
    }
}
