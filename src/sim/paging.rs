//! Cursor paging: the sort key of listed objects, opaque cursors, and the
//! selection of one page from a list kept in ascending key order.
//!
//! Graph API edges such as `/{form-id}/leads` list objects newest first, so a
//! page walks the ascending list backwards. A cursor stores the sort key of an
//! object, which keeps pages stable while new leads arrive at the top.

use std::cmp::Ordering;

/// Sort key of a listed object: creation time, then id.
///
/// Ids compare as numbers when both are decimal strings without leading zeros,
/// because a shorter string is then the smaller number. Other ids fall back to
/// the same length-then-bytes order, which is still a total order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SortKey {
    /// Unix seconds.
    pub created: i64,
    pub id: String,
}

impl SortKey {
    pub fn new(created: i64, id: impl Into<String>) -> Self {
        Self {
            created,
            id: id.into(),
        }
    }
}

impl Ord for SortKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.created
            .cmp(&other.created)
            .then_with(|| self.id.len().cmp(&other.id.len()))
            .then_with(|| self.id.cmp(&other.id))
    }
}

impl PartialOrd for SortKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Inclusive lower and exclusive upper bound on creation time, in Unix seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TimeRange {
    pub min_inclusive: Option<i64>,
    pub max_exclusive: Option<i64>,
}

impl TimeRange {
    /// Narrows the range so it also satisfies `created >= min`.
    pub fn require_at_least(&mut self, min: i64) {
        self.min_inclusive = Some(self.min_inclusive.map_or(min, |current| current.max(min)));
    }

    /// Narrows the range so it also satisfies `created < max`.
    pub fn require_below(&mut self, max: i64) {
        self.max_exclusive = Some(self.max_exclusive.map_or(max, |current| current.min(max)));
    }
}

/// Position a request continues from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PageCursor {
    /// `after=`: objects older than this key.
    After(SortKey),
    /// `before=`: objects newer than this key.
    Before(SortKey),
}

/// One page chosen from an ascending list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PageSelection {
    /// Indices into the ascending list, newest first.
    pub indices: Vec<usize>,
    /// Older objects follow the last index, so the response gets `next`.
    pub has_older: bool,
    /// Newer objects precede the first index, so the response gets `previous`.
    pub has_newer: bool,
}

/// Selects up to `limit` objects, newest first, from `items` sorted ascending
/// by `key_of`.
pub(crate) fn select_page<T>(
    items: &[T],
    key_of: impl Fn(&T) -> &SortKey,
    range: &TimeRange,
    cursor: Option<&PageCursor>,
    limit: usize,
) -> PageSelection {
    let range_start = match range.min_inclusive {
        Some(min) => items.partition_point(|item| key_of(item).created < min),
        None => 0,
    };
    let range_end = match range.max_exclusive {
        Some(max) => items.partition_point(|item| key_of(item).created < max),
        None => items.len(),
    };
    if range_start >= range_end {
        return PageSelection {
            indices: Vec::new(),
            has_older: false,
            has_newer: false,
        };
    }

    match cursor {
        None | Some(PageCursor::After(_)) => {
            // Older objects are the smaller keys, so the page is the top
            // `limit` keys below the cursor.
            let end = match cursor {
                Some(PageCursor::After(key)) => items
                    .partition_point(|item| key_of(item) < key)
                    .min(range_end),
                _ => range_end,
            };
            let end = end.max(range_start);
            let start = end.saturating_sub(limit).max(range_start);
            PageSelection {
                indices: (start..end).rev().collect(),
                has_older: start > range_start,
                has_newer: end < range_end,
            }
        }
        Some(PageCursor::Before(key)) => {
            // Newer objects are the larger keys, so the page is the `limit`
            // keys just above the cursor.
            let start = items
                .partition_point(|item| key_of(item) <= key)
                .max(range_start)
                .min(range_end);
            let end = start.saturating_add(limit).min(range_end);
            PageSelection {
                indices: (start..end).rev().collect(),
                has_older: start > range_start,
                has_newer: end < range_end,
            }
        }
    }
}

/// Encodes a sort key as an opaque cursor: standard base64 with padding of
/// the big-endian creation time followed by the id bytes.
///
/// The binary layout makes `+`, `/` and `=` appear in cursors, as they do in
/// Meta's, so a client that forgets to URL-encode a cursor breaks here too.
pub(crate) fn encode_cursor(key: &SortKey) -> String {
    let mut bytes = Vec::with_capacity(8 + key.id.len());
    bytes.extend_from_slice(&key.created.to_be_bytes());
    bytes.extend_from_slice(key.id.as_bytes());
    base64_encode(&bytes)
}

/// Decodes a cursor made by [`encode_cursor`]; `None` when it is not one.
pub(crate) fn decode_cursor(cursor: &str) -> Option<SortKey> {
    let bytes = base64_decode(cursor)?;
    if bytes.len() <= 8 {
        return None;
    }
    let (time_bytes, id_bytes) = bytes.split_at(8);
    let created = i64::from_be_bytes(time_bytes.try_into().ok()?);
    let id = String::from_utf8(id_bytes.to_vec()).ok()?;
    Some(SortKey::new(created, id))
}

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b0 = chunk[0];
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let sextets = [
            b0 >> 2,
            ((b0 & 0x03) << 4) | (b1 >> 4),
            ((b1 & 0x0f) << 2) | (b2 >> 6),
            b2 & 0x3f,
        ];
        let emitted = chunk.len() + 1;
        for (position, sextet) in sextets.iter().enumerate() {
            if position < emitted {
                out.push(BASE64_ALPHABET[usize::from(*sextet)] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard or URL-safe base64, with or without padding.
///
/// A space decodes as `+`, because a client that sends a cursor unencoded
/// in a query string has its `+` turned into a space by form decoding.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut sextets = Vec::with_capacity(text.len());
    for character in text.trim_end_matches('=').chars() {
        let value = match character {
            'A'..='Z' => character as u8 - b'A',
            'a'..='z' => character as u8 - b'a' + 26,
            '0'..='9' => character as u8 - b'0' + 52,
            '+' | '-' | ' ' => 62,
            '/' | '_' => 63,
            _ => return None,
        };
        sextets.push(value);
    }
    if sextets.len() % 4 == 1 {
        return None;
    }

    let mut bytes = Vec::with_capacity(sextets.len() * 3 / 4);
    for chunk in sextets.chunks(4) {
        let s0 = chunk[0];
        let s1 = chunk.get(1).copied().unwrap_or(0);
        let s2 = chunk.get(2).copied().unwrap_or(0);
        let s3 = chunk.get(3).copied().unwrap_or(0);
        bytes.push((s0 << 2) | (s1 >> 4));
        if chunk.len() > 2 {
            bytes.push((s1 << 4) | (s2 >> 2));
        }
        if chunk.len() > 3 {
            bytes.push((s2 << 6) | s3);
        }
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(pairs: &[(i64, &str)]) -> Vec<SortKey> {
        let mut keys: Vec<SortKey> = pairs.iter().map(|(t, id)| SortKey::new(*t, *id)).collect();
        keys.sort();
        keys
    }

    fn ids(all: &[SortKey], selection: &PageSelection) -> Vec<String> {
        selection
            .indices
            .iter()
            .map(|&i| all[i].id.clone())
            .collect()
    }

    #[test]
    fn sort_key_compares_ids_numerically() {
        assert!(SortKey::new(5, "9") < SortKey::new(5, "10"));
        assert!(SortKey::new(5, "9007199254740993") < SortKey::new(5, "9007199254740994"));
        assert!(SortKey::new(4, "99") < SortKey::new(5, "1"));
    }

    #[test]
    fn cursor_round_trips() {
        for key in [
            SortKey::new(1_714_557_600, "9007199254740993"),
            SortKey::new(0, "1"),
            SortKey::new(-5, "lead-with-text-id"),
        ] {
            let cursor = encode_cursor(&key);
            assert_eq!(decode_cursor(&cursor), Some(key));
        }
    }

    #[test]
    fn cursor_is_padded_standard_base64() {
        let cursor = encode_cursor(&SortKey::new(1_714_557_600, "9007199254740993"));
        assert!(
            cursor.len().is_multiple_of(4),
            "cursor {cursor} is not padded"
        );
        assert!(cursor
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '='));
    }

    #[test]
    fn cursor_decodes_url_safe_and_space_variants() {
        let key = SortKey::new(0x3ff_fbff, "12");
        let cursor = encode_cursor(&key);
        let url_safe = cursor.replace('+', "-").replace('/', "_").replace('=', "");
        assert_eq!(decode_cursor(&url_safe), Some(key.clone()));
        let spaced = cursor.replace('+', " ");
        assert_eq!(decode_cursor(&spaced), Some(key));
    }

    #[test]
    fn cursor_rejects_garbage() {
        assert_eq!(decode_cursor("not a cursor!"), None);
        assert_eq!(decode_cursor(""), None);
        assert_eq!(decode_cursor("QQ=="), None);
    }

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_decode("Zm9vYg==").as_deref(), Some(&b"foob"[..]));
    }

    #[test]
    fn pages_walk_newest_first_without_overlap() {
        let all = keys(&[
            (1, "1"),
            (2, "2"),
            (2, "3"),
            (2, "4"),
            (3, "5"),
            (4, "6"),
            (5, "7"),
        ]);
        let range = TimeRange::default();

        let first = select_page(&all, |key| key, &range, None, 3);
        assert_eq!(ids(&all, &first), ["7", "6", "5"]);
        assert!(first.has_older);
        assert!(!first.has_newer);

        let after = PageCursor::After(all[first.indices[2]].clone());
        let second = select_page(&all, |key| key, &range, Some(&after), 3);
        assert_eq!(ids(&all, &second), ["4", "3", "2"]);
        assert!(second.has_older);
        assert!(second.has_newer);

        let after = PageCursor::After(all[second.indices[2]].clone());
        let third = select_page(&all, |key| key, &range, Some(&after), 3);
        assert_eq!(ids(&all, &third), ["1"]);
        assert!(!third.has_older);
        assert!(third.has_newer);
    }

    #[test]
    fn before_cursor_returns_newer_page() {
        let all = keys(&[(1, "1"), (2, "2"), (3, "3"), (4, "4"), (5, "5")]);
        let before = PageCursor::Before(SortKey::new(2, "2"));
        let page = select_page(&all, |key| key, &TimeRange::default(), Some(&before), 2);
        assert_eq!(ids(&all, &page), ["4", "3"]);
        assert!(page.has_older);
        assert!(page.has_newer);
    }

    #[test]
    fn time_range_limits_page() {
        let all = keys(&[(10, "1"), (20, "2"), (20, "3"), (30, "4"), (40, "5")]);
        let mut range = TimeRange::default();
        range.require_at_least(20);
        range.require_below(40);
        let page = select_page(&all, |key| key, &range, None, 10);
        assert_eq!(ids(&all, &page), ["4", "3", "2"]);
        assert!(!page.has_older);
        assert!(!page.has_newer);
    }

    #[test]
    fn empty_range_returns_nothing() {
        let all = keys(&[(10, "1"), (20, "2")]);
        let mut range = TimeRange::default();
        range.require_at_least(30);
        let page = select_page(&all, |key| key, &range, None, 10);
        assert!(page.indices.is_empty());
        assert!(!page.has_older);
    }

    #[test]
    fn time_range_keeps_tightest_bounds() {
        let mut range = TimeRange::default();
        range.require_at_least(5);
        range.require_at_least(3);
        range.require_below(50);
        range.require_below(60);
        assert_eq!(range.min_inclusive, Some(5));
        assert_eq!(range.max_exclusive, Some(50));
    }

    #[test]
    fn after_cursor_of_deleted_key_still_pages() {
        let all = keys(&[(1, "1"), (3, "3"), (5, "5")]);
        let after = PageCursor::After(SortKey::new(4, "4"));
        let page = select_page(&all, |key| key, &TimeRange::default(), Some(&after), 10);
        assert_eq!(ids(&all, &page), ["3", "1"]);
    }
}
