//! Joins the guards' traces with the clients' labels: each labelled circuit gets the
//! trace its guard recorded under its first-hop id. Ids are per channel, so two circuits
//! (of two clients, or a relay's own) may share one: such ids are dropped and counted.

use std::collections::HashMap;

use super::classifier::Cell;
use crate::client::CircPurpose;

/// Labelled traces, by purpose, and what could not be used.
#[derive(Debug, Default, Clone)]
pub struct Dataset {
    /// Traces of circuits of each purpose (HsDir circuits are left out).
    pub by_purpose: Vec<(CircPurpose, Vec<Vec<Cell>>)>,
    /// Labelled ids that were also labelled by another circuit or recorded at more than
    /// one relay: dropped.
    pub duplicates: usize,
    /// Labelled circuits no relay recorded (torn down before any relay cell).
    pub unseen: usize,
}

impl Dataset {
    /// Joins the `measured` circuits with the traces of every relay; `built` is every
    /// first-hop id every client of the run reported (measured or not: an id reported
    /// twice is ambiguous).
    pub fn join(
        measured: &[(u32, CircPurpose)],
        built: &[u32],
        traces: &[HashMap<u32, Vec<Cell>>],
    ) -> Dataset {
        let mut label_count: HashMap<u32, usize> = HashMap::new();
        for id in built {
            *label_count.entry(*id).or_default() += 1;
        }
        let mut out = Dataset::default();
        for (id, purpose) in measured {
            let mut found = traces.iter().filter_map(|t| t.get(id));
            let (first, second) = (found.next(), found.next());
            if label_count.get(id).copied().unwrap_or(0) > 1 || second.is_some() {
                out.duplicates += 1;
                continue;
            }
            let Some(trace) = first else {
                out.unseen += 1;
                continue;
            };
            match out.by_purpose.iter_mut().find(|(p, _)| p == purpose) {
                Some((_, v)) => v.push(trace.clone()),
                None => out.by_purpose.push((*purpose, vec![trace.clone()])),
            }
        }
        out
    }

    /// The traces of the circuits whose purpose is one of `purposes`.
    pub fn traces(&self, purposes: &[CircPurpose]) -> Vec<&[Cell]> {
        self.by_purpose
            .iter()
            .filter(|(p, _)| purposes.contains(p))
            .flat_map(|(_, v)| v.iter().map(Vec::as_slice))
            .collect()
    }

    /// Circuits of purpose `p`.
    pub fn count(&self, p: CircPurpose) -> usize {
        self.traces(&[p]).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn duplicates_and_unseen_are_left_out_and_counted() {
        let cell = |forward| Cell {
            forward,
            at: Duration::ZERO,
        };
        let guard_a = HashMap::from([(1, vec![cell(true)]), (2, vec![cell(false)]), (5, vec![])]);
        let guard_b = HashMap::from([(3, vec![cell(true)]), (5, vec![])]);
        let measured = [
            (1, CircPurpose::Exit),
            (2, CircPurpose::RendClient),
            (3, CircPurpose::Exit), // another client reported it too
            (4, CircPurpose::Exit), // no relay saw it
            (5, CircPurpose::Exit), // recorded at two relays
        ];
        let built = [1, 2, 3, 4, 5, 3, 6];
        let d = Dataset::join(&measured, &built, &[guard_a, guard_b]);
        assert_eq!((d.duplicates, d.unseen), (2, 1));
        assert_eq!(d.count(CircPurpose::Exit), 1);
        assert_eq!(d.count(CircPurpose::RendClient), 1);
        assert_eq!(
            d.traces(&[CircPurpose::Exit, CircPurpose::RendClient])
                .len(),
            2
        );
        assert!(d.traces(&[CircPurpose::RendService]).is_empty());
    }
}
