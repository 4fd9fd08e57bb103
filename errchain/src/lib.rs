//! An error and its causes on one line, "a: b: c": the error's message,
//! then each `source()` in turn, joined by `": "`. The workspace's daemons
//! use it for log fields, gRPC statuses and replies, where a multi-line
//! report does not fit.
//!
//! It does not deduplicate messages, truncate, or format backtraces; errors
//! are expected to keep their cause out of their own message (the cause is
//! in `#[source]`), so nothing is printed twice.

/// Render `e` and its whole `source()` chain on one line: "a: b: c".
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn joins_every_source_in_order() {
        let e = Layer(
            "adding SA",
            Some(Box::new(Layer(
                "netlink",
                Some(Box::new(Layer("EEXIST", None))),
            ))),
        );
        assert_eq!(chain(&e), "adding SA: netlink: EEXIST");
    }

    #[test]
    fn an_error_without_source_is_its_message() {
        assert_eq!(chain(&Layer("alone", None)), "alone");
    }

    #[test]
    fn takes_a_static_trait_object_too() {
        let io = std::io::Error::other("boom");
        let e: &(dyn std::error::Error + 'static) = &io;
        assert_eq!(chain(e), "boom");
    }
}
