//! Just enough of a PromQL reader for the monitoring files' check: which metric
//! names an expression selects, and the label names of their `{…}` matchers.

/// Keywords followed by a parenthesised list of label names.
const GROUPINGS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Other PromQL words that are never a metric name: aggregations (which may come
/// before their `by (…)`, not right before a parenthesis) and operators.
const KEYWORDS: [&str; 17] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
];

/// The metric names of a PromQL expression, each with the label names its `{…}`
/// matchers use. Enough PromQL for these files: strings, matchers, ranges,
/// numbers and durations hold no metric name; a word before `(` is a function.
pub fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    let bytes = expr.as_bytes();
    let mut found: Vec<(String, Vec<String>)> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'{' {
            let end = closing(bytes, i, b'}');
            let labels = label_names(&expr[i + 1..end]);
            match found.last_mut() {
                Some((_, existing)) if existing.is_empty() && ends_with_name(&expr[..i]) => {
                    *existing = labels
                }
                _ => panic!("a selector without a metric name in {expr}"),
            }
            i = end + 1;
        } else if c == b'[' {
            i = closing(bytes, i, b']') + 1;
        } else if c == b'"' || c == b'\'' {
            i = string_end(bytes, i) + 1;
        } else if c.is_ascii_digit() || c == b'.' {
            i += expr[i..]
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '.'))
                .unwrap_or(expr.len() - i);
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let len = expr[i..]
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_' || ch == ':'))
                .unwrap_or(expr.len() - i);
            let word = &expr[i..i + len];
            i += len;
            let next = expr[i..].trim_start();
            if GROUPINGS.contains(&word) {
                if next.starts_with('(') {
                    i = closing(bytes, expr.len() - next.len(), b')') + 1;
                }
            } else if !KEYWORDS.contains(&word) && !next.starts_with('(') {
                found.push((word.to_string(), Vec::new()));
            }
        } else {
            i += 1;
        }
    }
    found
}

/// Whether the text before a `{` ends in a name (a selector, not a bare `{…}`).
fn ends_with_name(before: &str) -> bool {
    before
        .chars()
        .next_back()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The label names of `a="x", b=~"y"` (up to a closing `}` or the end).
pub fn label_names(matchers: &str) -> Vec<String> {
    let bytes = matchers.as_bytes();
    let mut names = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() && bytes[i] != b'}' {
        match bytes[i] {
            b'"' | b'\'' => {
                i = string_end(bytes, i);
                start = i + 1;
            }
            b'=' | b'!' => {
                let name = matchers[start..i].trim().trim_start_matches(',').trim();
                if !name.is_empty() {
                    names.push(name.to_string());
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    names
}

/// The index of the quote that closes the string opening at `open`.
fn string_end(bytes: &[u8], open: usize) -> usize {
    let quote = bytes[open];
    let mut i = open + 1;
    while i < bytes.len() && bytes[i] != quote {
        i += if bytes[i] == b'\\' { 2 } else { 1 };
    }
    assert!(i < bytes.len(), "an unclosed string");
    i
}

/// The index of `close` that ends the bracket opening at `open` (strings skipped).
fn closing(bytes: &[u8], open: usize, close: u8) -> usize {
    let opener = bytes[open];
    let mut depth = 0;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' => i = string_end(bytes, i),
            c if c == opener => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!("an unclosed {:?}", opener as char);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_promql_reader_finds_metrics_and_their_matcher_labels() {
        let expr = r#"histogram_quantile(0.99, sum by (route, le) (rate(a_bucket{job="x", route!~"/a|/b"}[5m]))) / ignoring(le) b offset 5m > 0.5 and on (instance) c"#;
        assert_eq!(
            selectors(expr),
            vec![
                (
                    "a_bucket".to_string(),
                    vec!["job".to_string(), "route".to_string()]
                ),
                ("b".to_string(), vec![]),
                ("c".to_string(), vec![]),
            ]
        );
        assert_eq!(selectors("time() - up"), vec![("up".to_string(), vec![])]);
    }
}
