//! The one place where history columns turn into domain types and back: statuses, stages,
//! triggers and failure kinds are stored by their stable names, and a name this version does
//! not know is a conversion error, not a silently wrong row.

use nkvm_domain::FailureKind;
use rusqlite::types::Type;
use std::str::FromStr;

/// Column `idx` parsed into `T` by its stable name.
pub(crate) fn named<T: FromStr<Err = String>>(
    r: &rusqlite::Row<'_>,
    idx: usize,
) -> rusqlite::Result<T> {
    let text: String = r.get(idx)?;
    text.parse()
        .map_err(|e: String| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, e.into()))
}

/// A failure-kind column: `''` for none, else a [`FailureKind::label`].
pub(crate) fn failure_kind(
    r: &rusqlite::Row<'_>,
    idx: usize,
) -> rusqlite::Result<Option<FailureKind>> {
    let text: String = r.get(idx)?;
    if text.is_empty() {
        return Ok(None);
    }
    FailureKind::from_label(&text).map(Some).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            Type::Text,
            format!("unknown failure kind {text:?}").into(),
        )
    })
}

/// The text stored for a failure kind.
pub(crate) fn failure_label(kind: Option<FailureKind>) -> &'static str {
    kind.map_or("", FailureKind::label)
}
