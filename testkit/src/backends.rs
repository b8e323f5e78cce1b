//! Tests of the engine and the store run on both backends unless they say
//! why not. A test file ends with one [`backends!`](macro@crate::backends) call:
//! the tests also run on PostgreSQL (the same definitions, each fixture a
//! database in the binary's shared cluster) and the SQLite-only ones, each
//! with its reason. A check in the same call reads the file and fails when a
//! `#[test]` is in neither list, so a new test is never silently SQLite-only.

/// Runs tests on PostgreSQL too and checks that the file's every `#[test]`
/// is listed:
///
/// ```ignore
/// saslgate_testkit::backends! {
///     source: include_str!("core_engine.rs"),
///     on_postgresql: [decision_matrix, two_step_logins],
///     sqlite_only: [broken_storage_is_unavailable: "SQLite's files"],
/// }
/// ```
#[macro_export]
macro_rules! backends {
    (
        source: $source:expr,
        on_postgresql: [$($pg:ident),* $(,)?],
        sqlite_only: [$($only:ident: $why:literal),* $(,)?] $(,)?
    ) => {
        mod on_postgresql {
            $(
                #[test]
                fn $pg() {
                    $crate::on_postgresql(super::$pg);
                }
            )*
        }

        #[test]
        fn every_test_runs_on_both_backends_or_says_why() {
            $crate::backends::check_listed(
                $source,
                &[$(stringify!($pg)),*],
                &[$((stringify!($only), $why)),*],
            );
        }
    };
}

/// The names of the top-level `#[test]` functions of a test file's source.
pub fn tests_in(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut lines = source.lines();
    while let Some(line) = lines.next() {
        if line != "#[test]" {
            continue;
        }
        for next in lines.by_ref() {
            let next = next.trim();
            if next.starts_with("#[") || next.starts_with("//") {
                continue;
            }
            if let Some(rest) = next.strip_prefix("fn ") {
                names.push(rest.split('(').next().unwrap_or("").trim().to_string());
            }
            break;
        }
    }
    names
}

/// Panics unless every test of `source` is in exactly one of the lists, and
/// every listed name is a test there.
pub fn check_listed(source: &str, on_postgresql: &[&str], sqlite_only: &[(&str, &str)]) {
    let tests = tests_in(source);
    let mut wrong = Vec::new();
    for t in &tests {
        let pg = on_postgresql.contains(&t.as_str());
        let only = sqlite_only.iter().any(|(n, _)| n == t);
        match (pg, only) {
            (false, false) => wrong.push(format!(
                "{t}: add it to `on_postgresql`, or to `sqlite_only` with the reason"
            )),
            (true, true) => wrong.push(format!("{t}: in both lists")),
            _ => {}
        }
    }
    for name in on_postgresql
        .iter()
        .chain(sqlite_only.iter().map(|(n, _)| n))
    {
        if !tests.iter().any(|t| t == name) {
            wrong.push(format!("{name}: listed, but no `#[test] fn {name}` here"));
        }
    }
    for (name, why) in sqlite_only {
        if why.trim().is_empty() {
            wrong.push(format!("{name}: SQLite-only without a reason"));
        }
    }
    assert!(wrong.is_empty(), "backends! lists:\n{}", wrong.join("\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "#[test]\nfn a() {}\n\n#[test]\n#[ignore]\n// why\nfn b_c() {}\nfn helper() {}\n    #[test]\n    fn $name() {}\n";

    #[test]
    fn finds_the_top_level_tests() {
        assert_eq!(tests_in(SOURCE), ["a", "b_c"]);
    }

    #[test]
    fn every_test_is_listed_once() {
        check_listed(SOURCE, &["a"], &[("b_c", "files")]);
        for (pg, only) in [
            (&["a"][..], &[][..]),
            (&["a", "b_c"][..], &[("b_c", "files")][..]),
            (&["a", "helper"][..], &[("b_c", "files")][..]),
            (&["a"][..], &[("b_c", " ")][..]),
        ] {
            let r = std::panic::catch_unwind(|| check_listed(SOURCE, pg, only));
            assert!(r.is_err(), "{pg:?} {only:?}");
        }
    }
}
