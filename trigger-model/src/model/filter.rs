//! [`Filter`]: which triggers a subscription, dump, flush or query
//! applies to.

use super::{
    enums::{Source, TriggerType},
    trigger::Trigger,
};

/// Which triggers a subscription, dump, flush or query applies to. Empty
/// lists match everything; lists AND together, entries of one list OR.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub interfaces: Vec<String>,
    pub types: Vec<TriggerType>,
    pub sources: Vec<Source>,
}

/// Most entries one filter list may have.
pub const MAX_FILTER_ENTRIES: usize = 256;

impl Filter {
    pub fn matches(&self, t: &Trigger) -> bool {
        (self.types.is_empty() || self.types.contains(&t.kind))
            && (self.sources.is_empty() || self.sources.contains(&t.source))
            && (self.interfaces.is_empty()
                || t.interface_name()
                    .is_some_and(|n| self.interfaces.iter().any(|i| i == n)))
    }

    pub fn is_empty(&self) -> bool {
        self.interfaces.is_empty() && self.types.is_empty() && self.sources.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::trigger::going_down_sample;

    #[test]
    fn filter_matches_all_lists() {
        let t = going_down_sample();
        let mut f = Filter::default();
        assert!(f.matches(&t));
        f.interfaces = vec!["eth0".into()];
        assert!(!f.matches(&t));
        f.interfaces.push("wlan0".into());
        assert!(f.matches(&t));
        f.sources = vec![Source::Rtnetlink];
        assert!(!f.matches(&t));
    }
}
