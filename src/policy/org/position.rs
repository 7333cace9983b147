//! Line and column of a byte offset in a policy or team file, for load errors.

/// 1-based line of a byte offset.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()
        .get(..end)
        .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
        + 1
}

/// 1-based column, in characters, of a byte offset.
pub(super) fn column_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    let line_start = text
        .as_bytes()
        .get(..end)
        .and_then(|b| b.iter().rposition(|&c| c == b'\n'))
        .map_or(0, |p| p + 1);
    text.get(line_start..end)
        .map_or(1, |t| t.chars().count() + 1)
}
