//! The classes of failure airlock reports, shared by every pipeline stage.
//!
//! Each module has its own error enum; each enum maps its variants onto one of
//! these classes so that the CLI can choose an exit code and the daemon can
//! decide whether to retry.

/// What kind of failure an error is, independent of where it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// Bad flags, unreadable configuration or key files: the operator must fix
    /// the invocation. Exit code 2.
    Config,
    /// The bundle is not what its signature or its own index says it is:
    /// permanent, never retried, nothing is pushed. Exit code 3.
    Integrity,
    /// The registry or the network failed: usually transient. Exit code 4.
    Transport,
}

impl FailureClass {
    /// The process exit code documented for this class of failure.
    pub fn exit_code(self) -> u8 {
        match self {
            FailureClass::Config => 2,
            FailureClass::Integrity => 3,
            FailureClass::Transport => 4,
        }
    }

    /// A short, bounded label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Config => "config",
            FailureClass::Integrity => "integrity",
            FailureClass::Transport => "transport",
        }
    }
}
