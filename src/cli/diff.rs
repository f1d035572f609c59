//! A unified line diff, as `edit-config` shows before it asks to apply a change.
//!
//! Configurations are a few dozen lines, so the plain longest-common-subsequence table
//! (O(n·m)) is plenty; hunks carry three lines of context and `@@ -a,b +c,d @@` headers counted
//! the way `diff -u` (and Python's difflib, which patronictl uses) count them.

/// One line of the edit script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Same,
    Del,
    Add,
}

/// Lines of context around each change.
const CONTEXT: usize = 3;

/// The unified diff from `before` to `after` (labelled `from` and `to`); empty when equal.
pub fn unified(before: &str, after: &str, from: &str, to: &str) -> String {
    let a: Vec<&str> = before.lines().collect();
    let b: Vec<&str> = after.lines().collect();
    let script = edit_script(&a, &b);
    if script.iter().all(|(op, _, _)| *op == Op::Same) {
        return String::new();
    }
    let mut out = format!("--- {from}\n+++ {to}\n");
    // Group changes whose context overlaps into one hunk.
    let changed: Vec<usize> = (0..script.len()).filter(|&k| script[k].0 != Op::Same).collect();
    let mut groups: Vec<(usize, usize)> = Vec::new();
    for &k in &changed {
        let lo = k.saturating_sub(CONTEXT);
        let hi = (k + CONTEXT + 1).min(script.len());
        match groups.last_mut() {
            Some(g) if lo <= g.1 => g.1 = hi,
            _ => groups.push((lo, hi)),
        }
    }
    for (lo, hi) in groups {
        let part = &script[lo..hi];
        let a_start = part
            .iter()
            .find_map(|&(op, i, _)| (op != Op::Add).then_some(i))
            .unwrap_or_else(|| next_index(&script[..lo], true));
        let b_start = part
            .iter()
            .find_map(|&(op, _, j)| (op != Op::Del).then_some(j))
            .unwrap_or_else(|| next_index(&script[..lo], false));
        let a_len = part.iter().filter(|(op, _, _)| *op != Op::Add).count();
        let b_len = part.iter().filter(|(op, _, _)| *op != Op::Del).count();
        out.push_str(&format!("@@ -{} +{} @@\n", range(a_start, a_len), range(b_start, b_len)));
        for &(op, i, j) in part {
            match op {
                Op::Same => out.push_str(&format!(" {}\n", a[i])),
                Op::Del => out.push_str(&format!("-{}\n", a[i])),
                Op::Add => out.push_str(&format!("+{}\n", b[j])),
            }
        }
    }
    out
}

/// Where the next line of `a` (or `b`) would be after `prefix` of the script.
fn next_index(prefix: &[(Op, usize, usize)], in_a: bool) -> usize {
    prefix
        .iter()
        .rev()
        .find_map(|&(op, i, j)| match (in_a, op) {
            (true, Op::Same | Op::Del) => Some(i + 1),
            (false, Op::Same | Op::Add) => Some(j + 1),
            _ => None,
        })
        .unwrap_or(0)
}

/// `start,len` with `diff -u`'s conventions: 1-based, `,len` omitted when 1, and an empty range
/// named by the line before it.
fn range(start: usize, len: usize) -> String {
    match len {
        1 => format!("{}", start + 1),
        0 => format!("{start},0"),
        _ => format!("{},{len}", start + 1),
    }
}

/// The edit script: (op, index in a, index in b); for `Add` the `a` index is where it lands.
fn edit_script(a: &[&str], b: &[&str]) -> Vec<(Op, usize, usize)> {
    let (n, m) = (a.len(), b.len());
    // lcs[i][j]: length of the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(n + m);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push((Op::Same, i, j));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] > lcs[i + 1][j]) {
            out.push((Op::Add, i, j));
            j += 1;
        } else {
            out.push((Op::Del, i, j));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_have_no_diff() {
        assert_eq!(unified("a\nb\n", "a\nb\n", "x", "y"), "");
    }

    #[test]
    fn one_changed_line_with_context() {
        let before = "loop_wait: 10\npostgresql:\n  use_pg_rewind: true\nretry_timeout: 10\nttl: 30\n";
        let after = "loop_wait: 10\npostgresql:\n  use_pg_rewind: true\nretry_timeout: 10\nttl: 20\n";
        assert_eq!(
            unified(before, after, "before", "after"),
            "--- before\n+++ after\n@@ -2,4 +2,4 @@\n postgresql:\n   use_pg_rewind: true\n retry_timeout: 10\n-ttl: 30\n+ttl: 20\n"
        );
    }

    #[test]
    fn distant_changes_make_two_hunks_and_insertions_count_right() {
        let before: String = (1..=20).map(|i| format!("l{i}\n")).collect();
        let after = before.replace("l2\n", "l2\nnew\n").replace("l19\n", "");
        let d = unified(&before, &after, "a", "b");
        let headers: Vec<&str> = d.lines().filter(|l| l.starts_with("@@")).collect();
        assert_eq!(headers, ["@@ -1,5 +1,6 @@", "@@ -16,5 +17,4 @@"], "{d}");
        assert!(d.contains("\n+new\n") && d.contains("\n-l19\n"), "{d}");
    }

    #[test]
    fn additions_to_an_empty_text() {
        assert_eq!(unified("", "a\n", "x", "y"), "--- x\n+++ y\n@@ -0,0 +1 @@\n+a\n");
        assert_eq!(unified("a\n", "", "x", "y"), "--- x\n+++ y\n@@ -1 +0,0 @@\n-a\n");
    }
}
