//! Helpers storage drivers share: layer-id checks, error folding and the
//! small formatting the protocol needs.

use std::path::Path;

use crate::{DriverError, DriverResult, ErrorKind};

/// Longest layer id the file-based drivers accept: `<id>.json` must fit in
/// a file name (255 bytes).
pub const MAX_ID_LEN: usize = 250;

/// Checks that `id` can name a layer: non-empty, at most [`MAX_ID_LEN`]
/// bytes, not `.` or `..`, and without `/` or NUL. `what` names the id in
/// the message (`layer id`, `parent layer id`). Drivers that reserve names
/// of their own check those first.
pub fn validate_id(what: &str, id: &str) -> DriverResult<()> {
    let problem = if id.is_empty() {
        "is empty"
    } else if id == "." || id == ".." {
        "is not a valid name"
    } else if id.contains('/') {
        "contains '/'"
    } else if id.contains('\0') {
        "contains a NUL byte"
    } else if id.len() > MAX_ID_LEN {
        "is longer than 250 bytes"
    } else {
        return Ok(());
    };
    Err(DriverError::invalid_argument(format!("{what} {id:?} {problem}")))
}

/// One error out of many: the same kind if they all agree, otherwise
/// internal; every message kept. `None` when there is none (teardown that
/// tries every step and reports every failure).
pub fn combine(mut errors: Vec<DriverError>) -> Option<DriverError> {
    match errors.len() {
        0 => None,
        1 => errors.pop(),
        n => {
            let kind = errors[0].kind;
            let kind = if errors.iter().all(|e| e.kind == kind) { kind } else { ErrorKind::Internal };
            let all: Vec<String> = errors.into_iter().map(|e| e.message).collect();
            Some(DriverError::new(kind, format!("{n} errors: {}", all.join("; "))))
        }
    }
}

/// Ids for a message: a few, then how many more.
pub fn name_list(ids: &[&str]) -> String {
    const SHOWN: usize = 5;
    let mut s = ids.iter().take(SHOWN).map(|id| format!("{id:?}")).collect::<Vec<_>>().join(", ");
    if ids.len() > SHOWN {
        s.push_str(&format!(" and {} more", ids.len() - SHOWN));
    }
    s
}

/// A path as the UTF-8 string the protocol carries.
pub fn path_string(path: &Path) -> DriverResult<String> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| DriverError::internal(format!("path {} is not valid UTF-8", path.display())))
}
