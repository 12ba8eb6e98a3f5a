//! The error every driver method returns, and its closed set of kinds.

use std::fmt;

pub use crate::ffi::abi::ErrorKind;

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::InvalidArgument,
        ErrorKind::Conflict,
        ErrorKind::FailedPrecondition,
        ErrorKind::Unavailable,
        ErrorKind::Timeout,
        ErrorKind::Unsupported,
        ErrorKind::PermissionDenied,
        ErrorKind::ResourceExhausted,
        ErrorKind::Internal,
    ];

    /// The wire name, as sent in `"Kind"` over HTTP: `not_found`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::Conflict => "conflict",
            ErrorKind::FailedPrecondition => "failed_precondition",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::ResourceExhausted => "resource_exhausted",
            ErrorKind::Internal => "internal",
        }
    }

    /// Parses a wire name; unknown names give `None`.
    pub fn parse(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ErrorKind::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown error kind {s:?}")))
    }
}

/// An error from a driver: a kind from the closed vocabulary and a message.
///
/// Messages are lower case, name the object (and path), and say what to do
/// when that is not obvious: `layer "abc" not found under /var/lib/berth/vfs`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DriverError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// The human-readable explanation.
    pub message: String,
}

macro_rules! ctor {
    ($($(#[$doc:meta])* $fn:ident => $kind:ident),* $(,)?) => {
        impl DriverError {
            $(
                $(#[$doc])*
                pub fn $fn(message: impl Into<String>) -> Self {
                    DriverError::new(ErrorKind::$kind, message)
                }
            )*
        }
    };
}

ctor! {
    /// A [`ErrorKind::NotFound`] error.
    not_found => NotFound,
    /// An [`ErrorKind::AlreadyExists`] error.
    already_exists => AlreadyExists,
    /// An [`ErrorKind::InvalidArgument`] error.
    invalid_argument => InvalidArgument,
    /// A [`ErrorKind::Conflict`] error.
    conflict => Conflict,
    /// A [`ErrorKind::FailedPrecondition`] error.
    failed_precondition => FailedPrecondition,
    /// An [`ErrorKind::Unavailable`] error.
    unavailable => Unavailable,
    /// A [`ErrorKind::Timeout`] error.
    timeout => Timeout,
    /// An [`ErrorKind::Unsupported`] error.
    unsupported => Unsupported,
    /// A [`ErrorKind::PermissionDenied`] error.
    permission_denied => PermissionDenied,
    /// A [`ErrorKind::ResourceExhausted`] error.
    resource_exhausted => ResourceExhausted,
    /// An [`ErrorKind::Internal`] error.
    internal => Internal,
}

impl DriverError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        DriverError { kind, message: message.into() }
    }

    /// Maps an I/O error to the closest kind, prefixing `context`
    /// (e.g. `create layer "abc" at /x`).
    pub fn io(context: impl fmt::Display, err: &std::io::Error) -> Self {
        use std::io::ErrorKind as Io;
        let kind = match err.kind() {
            Io::NotFound => ErrorKind::NotFound,
            Io::AlreadyExists => ErrorKind::AlreadyExists,
            Io::PermissionDenied => ErrorKind::PermissionDenied,
            Io::InvalidInput | Io::InvalidData => ErrorKind::InvalidArgument,
            Io::TimedOut => ErrorKind::Timeout,
            Io::Unsupported => ErrorKind::Unsupported,
            Io::StorageFull | Io::QuotaExceeded => ErrorKind::ResourceExhausted,
            Io::ResourceBusy | Io::DirectoryNotEmpty => ErrorKind::Conflict,
            Io::ReadOnlyFilesystem => ErrorKind::PermissionDenied,
            _ => ErrorKind::Internal,
        };
        DriverError::new(kind, format!("{context}: {err}"))
    }

    /// Prefixes the message with `context`, keeping the kind.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

/// Shorthand for a driver method's result.
pub type DriverResult<T> = Result<T, DriverError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_wire_names() {
        for kind in ErrorKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<ErrorKind>(&json).unwrap(), kind);
        }
        assert!(serde_json::from_str::<ErrorKind>("\"exploded\"").is_err());
    }

    #[test]
    fn io_errors_map_to_the_closest_kind() {
        let e = std::io::Error::from_raw_os_error(libc_enoent());
        let d = DriverError::io("open /x", &e);
        assert_eq!(d.kind, ErrorKind::NotFound);
        assert!(d.message.starts_with("open /x: "), "{}", d.message);
    }

    fn libc_enoent() -> i32 {
        2
    }
}
