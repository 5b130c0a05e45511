//! What the guide tests share: a docs page must show, verbatim, the code a
//! test file marks between `// --- guide: begin ---` and `// --- guide: end ---`.

/// Panics unless `page` (the text of `page_name`) contains the marked part
/// of `source`.
pub fn assert_page_shows_marked_code(page_name: &str, page: &str, source: &str) {
    let code = source
        .split("// --- guide: begin ---\n")
        .nth(1)
        .and_then(|rest| rest.split("// --- guide: end ---").next())
        .expect("the test file marks its guide code");
    assert!(
        page.contains(code.trim()),
        "{page_name} does not show the tested code"
    );
}
