//! The attacker of the circuit-fingerprinting measurement (issue 22): classifiers that try
//! to tell two kinds of circuits apart from what a guard sees of each (cell directions and
//! times), evaluated by stratified cross-validation. Pure: no I/O, deterministic for a
//! given seed.
//!
//! The classifiers, the attacker's result being the best of them: the best single
//! threshold on one cell count, k-NN on the first directions, a small decision tree on
//! counts and prefix features. A fourth, the same tree also given timing features, is
//! reported beside them as a stronger attacker than the padding machines are built
//! against (they shape directions and counts, not times): [`best`] leaves it out.

use std::time::Duration;

/// Directions of the prefix the k-NN and the tree look at.
pub const PREFIX: usize = 50;
/// Neighbours of the k-NN (odd: no tied vote between two classes).
pub const K: usize = 5;
/// Depth of the decision tree.
pub const TREE_DEPTH: usize = 3;
/// Folds of the cross-validation.
pub const FOLDS: usize = 5;

/// One cell as the guard saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// Client → exit (true) or back.
    pub forward: bool,
    /// Since the circuit's first cell.
    pub at: Duration,
}

/// Names of [`Features::counts`], in order.
pub const FEATURE_NAMES: [&str; 9] = [
    "forward cells",
    "backward cells",
    "total cells",
    "forward in first 10",
    "forward in first 20",
    "forward in first 50",
    "longest forward run",
    "cells in first 1 s",
    "last cell (ms)",
];
/// How many of [`FEATURE_NAMES`] (the first ones) come from directions alone; the rest
/// are timing features.
pub const DIRECTION_FEATURES: usize = 7;
/// The classifier that also sees timing features (reported, not in [`best`]).
pub const TIMING_CLASSIFIER: &str = "decision tree with timing (depth 3)";
/// How many of [`FEATURE_NAMES`] are plain cell counts over the window (the threshold
/// classifier's features).
pub const COUNT_FEATURES: usize = 3;

/// What the classifiers see of one circuit.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// Named numeric features ([`FEATURE_NAMES`]).
    pub counts: [f64; FEATURE_NAMES.len()],
    /// The first [`PREFIX`] directions: +1 forward, -1 backward, 0 past the last cell.
    pub dirs: [i8; PREFIX],
}

impl Features {
    /// The features of a trace (cells in the order seen).
    pub fn of(trace: &[Cell]) -> Features {
        let fwd = trace.iter().filter(|c| c.forward).count();
        let fwd_in = |n: usize| trace.iter().take(n).filter(|c| c.forward).count() as f64;
        let mut dirs = [0i8; PREFIX];
        for (d, c) in dirs.iter_mut().zip(trace) {
            *d = if c.forward { 1 } else { -1 };
        }
        let (mut run, mut longest) = (0usize, 0usize);
        for c in trace {
            run = if c.forward { run + 1 } else { 0 };
            longest = longest.max(run);
        }
        let first_second = trace
            .iter()
            .filter(|c| c.at < Duration::from_secs(1))
            .count();
        let last_ms = trace.last().map_or(0.0, |c| c.at.as_secs_f64() * 1e3);
        Features {
            counts: [
                fwd as f64,
                (trace.len() - fwd) as f64,
                trace.len() as f64,
                fwd_in(10),
                fwd_in(20),
                fwd_in(PREFIX),
                longest as f64,
                first_second as f64,
                last_ms,
            ],
            dirs,
        }
    }
}

/// A labelled circuit: `positive` is the class the attacker tries to recognise.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The circuit's features.
    pub features: Features,
    /// Its class.
    pub positive: bool,
}

/// One classifier's cross-validated result.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// Which classifier.
    pub name: String,
    /// Correct predictions.
    pub correct: usize,
    /// Predictions made (every sample once).
    pub total: usize,
}

impl Score {
    /// Fraction correct (0 with no prediction).
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }

    /// The 95% Wilson score interval of the accuracy.
    pub fn wilson95(&self) -> (f64, f64) {
        wilson(self.correct, self.total, 1.959_964)
    }
}

/// The Wilson score interval for `k` successes in `n` trials at `z` standard deviations.
pub fn wilson(k: usize, n: usize, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n = n as f64;
    let p = k as f64 / n;
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// A small deterministic generator (SplitMix64): the folds and the balancing depend only
/// on the seed.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; 0 otherwise).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// Shuffles in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// Balances the classes (a random subset of the larger one, as large as the smaller) and
/// splits them into [`FOLDS`] stratified folds: each fold gets the same number of each
/// class (±1). Returns the folds as lists of indices into `samples`.
pub fn stratified_folds(samples: &[Sample], rng: &mut SplitMix) -> Vec<Vec<usize>> {
    let mut pos: Vec<usize> = (0..samples.len())
        .filter(|&i| samples.get(i).is_some_and(|s| s.positive))
        .collect();
    let mut neg: Vec<usize> = (0..samples.len())
        .filter(|&i| samples.get(i).is_some_and(|s| !s.positive))
        .collect();
    rng.shuffle(&mut pos);
    rng.shuffle(&mut neg);
    let n = pos.len().min(neg.len());
    let mut folds = vec![Vec::new(); FOLDS];
    for (j, (p, q)) in pos.into_iter().zip(neg).take(n).enumerate() {
        if let Some(f) = folds.get_mut(j % FOLDS) {
            f.extend([p, q]);
        }
    }
    folds
}

/// A trained classifier.
pub trait Model {
    /// Predicts whether `f` is of the positive class.
    fn predict(&self, f: &Features) -> bool;
}

/// A way to train a [`Model`] on labelled samples.
pub type Trainer = fn(&[&Sample]) -> Box<dyn Model>;

/// The classifiers the attacker tries, by name.
pub fn classifiers() -> Vec<(&'static str, Trainer)> {
    vec![
        (
            "best threshold on one cell count",
            train_threshold as Trainer,
        ),
        ("5-NN on the first 50 directions", train_knn as Trainer),
        ("decision tree (depth 3)", train_tree as Trainer),
        (TIMING_CLASSIFIER, train_timing_tree as Trainer),
    ]
}

/// Cross-validates every classifier of [`classifiers`] on `samples` (classes balanced,
/// [`FOLDS`] stratified folds; each sample predicted once, by a model that never saw it).
pub fn evaluate(samples: &[Sample], seed: u64) -> Vec<Score> {
    let folds = stratified_folds(samples, &mut SplitMix(seed));
    classifiers()
        .into_iter()
        .map(|(name, train)| {
            let (mut correct, mut total) = (0, 0);
            for (i, test) in folds.iter().enumerate() {
                let training: Vec<&Sample> = folds
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .flat_map(|(_, f)| f.iter().filter_map(|&k| samples.get(k)))
                    .collect();
                if training.is_empty() {
                    continue;
                }
                let model = train(&training);
                for s in test.iter().filter_map(|&k| samples.get(k)) {
                    total += 1;
                    if model.predict(&s.features) == s.positive {
                        correct += 1;
                    }
                }
            }
            Score {
                name: name.to_string(),
                correct,
                total,
            }
        })
        .collect()
}

/// The best of `scores` (the attacker's result), if any, leaving out the timing
/// classifier.
pub fn best(scores: &[Score]) -> Option<&Score> {
    scores
        .iter()
        .filter(|s| s.name != TIMING_CLASSIFIER)
        .max_by_key(|s| s.correct)
}

/// `feature >= cut` (or `<` when not `above`) predicts positive.
#[derive(Debug, Clone, Copy)]
struct Stump {
    feature: usize,
    cut: f64,
    above: bool,
}

impl Model for Stump {
    fn predict(&self, f: &Features) -> bool {
        let v = f.counts.get(self.feature).copied().unwrap_or(0.0);
        (v >= self.cut) == self.above
    }
}

/// How a split is judged from its four counts (positives and negatives below and at or
/// above the cut): lower is better; returns the score and the polarity to use.
type SplitScore = fn(usize, usize, usize, usize) -> (f64, bool);

/// Training errors of the better polarity (the threshold classifier).
fn errors(pos_below: usize, neg_below: usize, pos_above: usize, neg_above: usize) -> (f64, bool) {
    let above = pos_below + neg_above; // positive at or above the cut
    let below = neg_below + pos_above;
    if above <= below {
        (above as f64, true)
    } else {
        (below as f64, false)
    }
}

/// Weighted Gini impurity of the two sides (the tree's splits: it rewards a split that
/// purifies one side even when the errors do not fall yet).
fn gini(pos_below: usize, neg_below: usize, pos_above: usize, neg_above: usize) -> (f64, bool) {
    let side = |p: usize, n: usize| {
        let t = (p + n) as f64;
        if t == 0.0 {
            0.0
        } else {
            let (p, n) = (p as f64 / t, n as f64 / t);
            t * (1.0 - p * p - n * n)
        }
    };
    (
        side(pos_below, neg_below) + side(pos_above, neg_above),
        true,
    )
}

/// The stump over `features` with the best `score`, and that score.
fn best_stump(
    train: &[&Sample],
    features: std::ops::Range<usize>,
    score: SplitScore,
) -> (Stump, f64) {
    let mut best = (
        Stump {
            feature: 0,
            cut: f64::INFINITY,
            above: false,
        },
        f64::INFINITY,
    );
    for feature in features {
        let mut values: Vec<(f64, bool)> = train
            .iter()
            .map(|s| {
                (
                    s.features.counts.get(feature).copied().unwrap_or(0.0),
                    s.positive,
                )
            })
            .collect();
        values.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total_pos = values.iter().filter(|v| v.1).count();
        // Sweeping the cut upwards: below it are `i` samples, `pos_below` of them positive;
        // a cut is tried only between two different values (and below the smallest).
        let mut pos_below = 0;
        for i in 0..values.len() {
            let prev = i.checked_sub(1).and_then(|j| values.get(j));
            let (cur, positive) = values.get(i).map_or((0.0, false), |v| *v);
            if prev.is_none_or(|p| p.0 < cur) {
                let cut = prev.map_or(cur, |p| (p.0 + cur) / 2.0);
                let pos_above = total_pos - pos_below;
                let (s, above) = score(
                    pos_below,
                    i - pos_below,
                    pos_above,
                    values.len() - i - pos_above,
                );
                if s < best.1 {
                    best = (
                        Stump {
                            feature,
                            cut,
                            above,
                        },
                        s,
                    );
                }
            }
            if positive {
                pos_below += 1;
            }
        }
    }
    best
}

fn train_threshold(train: &[&Sample]) -> Box<dyn Model> {
    Box::new(best_stump(train, 0..COUNT_FEATURES, errors).0)
}

/// k nearest neighbours by Hamming distance on the direction prefix.
struct Knn {
    train: Vec<([i8; PREFIX], bool)>,
}

impl Model for Knn {
    fn predict(&self, f: &Features) -> bool {
        let mut d: Vec<(usize, bool)> = self
            .train
            .iter()
            .map(|(dirs, p)| (dirs.iter().zip(&f.dirs).filter(|(a, b)| a != b).count(), *p))
            .collect();
        // Stable: among equal distances, training order (shuffled by the folds) decides.
        d.sort_by_key(|x| x.0);
        let votes = d.iter().take(K).filter(|x| x.1).count();
        2 * votes > K.min(d.len())
    }
}

fn train_knn(train: &[&Sample]) -> Box<dyn Model> {
    Box::new(Knn {
        train: train
            .iter()
            .map(|s| (s.features.dirs, s.positive))
            .collect(),
    })
}

/// A decision tree: stumps at the inner nodes, a class at each leaf.
enum Tree {
    Leaf(bool),
    Split(Stump, Box<Tree>, Box<Tree>),
}

impl Model for Tree {
    fn predict(&self, f: &Features) -> bool {
        match self {
            Tree::Leaf(p) => *p,
            Tree::Split(s, yes, no) => {
                if s.predict(f) {
                    yes.predict(f)
                } else {
                    no.predict(f)
                }
            }
        }
    }
}

/// Grows a tree by the lowest Gini impurity at each split (a split that does not lower
/// it ends the branch).
fn grow(train: &[&Sample], depth: usize, features: usize) -> Tree {
    let pos = train.iter().filter(|s| s.positive).count();
    let majority = 2 * pos >= train.len();
    let leaf_errors = if majority { train.len() - pos } else { pos };
    if depth == 0 || leaf_errors == 0 {
        return Tree::Leaf(majority);
    }
    let (stump, impurity) = best_stump(train, 0..features, gini);
    if impurity >= gini(pos, train.len() - pos, 0, 0).0 {
        return Tree::Leaf(majority);
    }
    let (yes, no): (Vec<&Sample>, Vec<&Sample>) =
        train.iter().partition(|s| stump.predict(&s.features));
    if yes.is_empty() || no.is_empty() {
        return Tree::Leaf(majority);
    }
    Tree::Split(
        stump,
        Box::new(grow(&yes, depth - 1, features)),
        Box::new(grow(&no, depth - 1, features)),
    )
}

fn train_tree(train: &[&Sample]) -> Box<dyn Model> {
    Box::new(grow(train, TREE_DEPTH, DIRECTION_FEATURES))
}

fn train_timing_tree(train: &[&Sample]) -> Box<dyn Model> {
    Box::new(grow(train, TREE_DEPTH, FEATURE_NAMES.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(dirs: &[bool]) -> Vec<Cell> {
        dirs.iter()
            .enumerate()
            .map(|(i, &forward)| Cell {
                forward,
                at: Duration::from_millis(10 * i as u64),
            })
            .collect()
    }

    fn sample(dirs: &[bool], positive: bool) -> Sample {
        Sample {
            features: Features::of(&trace(dirs)),
            positive,
        }
    }

    /// Random directions (each forward with probability `p_fwd` percent), `len` cells.
    fn random_dirs(rng: &mut SplitMix, len: usize, p_fwd: usize) -> Vec<bool> {
        (0..len).map(|_| rng.below(100) < p_fwd).collect()
    }

    fn scores_for(samples: &[Sample]) -> Vec<Score> {
        let scores = evaluate(samples, 7);
        for s in &scores {
            let (lo, hi) = s.wilson95();
            eprintln!(
                "{}: {:.3} [{lo:.3}, {hi:.3}] of {}",
                s.name,
                s.accuracy(),
                s.total
            );
        }
        scores
    }

    #[test]
    fn wilson_interval_matches_known_values() {
        let (lo, hi) = wilson(50, 100, 1.959_964);
        assert!(
            (lo - 0.4038).abs() < 1e-3 && (hi - 0.5962).abs() < 1e-3,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson(100, 100, 1.959_964);
        assert!((lo - 0.9630).abs() < 1e-3 && hi == 1.0, "{lo} {hi}");
        assert_eq!(wilson(0, 0, 1.96), (0.0, 1.0));
    }

    #[test]
    fn features_count_directions_and_pad_the_prefix() {
        let f = Features::of(&trace(&[true, true, false, true]));
        assert_eq!(&f.counts[..3], &[3.0, 1.0, 4.0]);
        assert_eq!(f.counts[6], 2.0, "longest forward run");
        assert_eq!(&f.dirs[..5], &[1, 1, -1, 1, 0]);
        assert!(f.dirs[4..].iter().all(|d| *d == 0));
    }

    #[test]
    fn folds_are_balanced_and_stratified() {
        let samples: Vec<Sample> = (0..130).map(|i| sample(&[i % 2 == 0], i < 100)).collect();
        let folds = stratified_folds(&samples, &mut SplitMix(1));
        let all: Vec<usize> = folds.iter().flatten().copied().collect();
        assert_eq!(all.len(), 60, "30 of each class");
        for f in &folds {
            let pos = f.iter().filter(|&&i| samples[i].positive).count();
            assert_eq!(pos * 2, f.len());
        }
        let mut unique = all.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), all.len());
    }

    #[test]
    fn separable_counts_are_recognised_by_every_classifier() {
        let mut rng = SplitMix(3);
        let mut samples = Vec::new();
        for _ in 0..200 {
            let n = 4 + rng.below(4);
            samples.push(sample(&random_dirs(&mut rng, n, 50), true));
            let n = 30 + rng.below(20);
            samples.push(sample(&random_dirs(&mut rng, n, 50), false));
        }
        for s in scores_for(&samples) {
            assert!(s.accuracy() >= 0.97, "{s:?}");
            assert_eq!(s.total, 400);
        }
    }

    #[test]
    fn an_order_only_difference_is_seen_by_the_prefix_classifiers_only() {
        // Same counts (10 forward, 10 backward); the positive class sends its forward
        // cells first, the other alternates.
        let mut samples = Vec::new();
        for _ in 0..150 {
            let first: Vec<bool> = (0..20).map(|i| i < 10).collect();
            let alternate: Vec<bool> = (0..20).map(|i| i % 2 == 0).collect();
            samples.push(sample(&first, true));
            samples.push(sample(&alternate, false));
        }
        let scores = scores_for(&samples);
        assert!(
            scores[0].accuracy() <= 0.6,
            "threshold on counts: {:?}",
            scores[0]
        );
        assert!(scores[1].accuracy() >= 0.97, "k-NN: {:?}", scores[1]);
        assert!(scores[2].accuracy() >= 0.97, "tree: {:?}", scores[2]);
    }

    #[test]
    fn identical_distributions_stay_near_chance() {
        let mut rng = SplitMix(11);
        let mut samples = Vec::new();
        for i in 0..600 {
            let n = 5 + rng.below(40);
            samples.push(sample(&random_dirs(&mut rng, n, 40), i % 2 == 0));
        }
        let scores = scores_for(&samples);
        for s in &scores {
            assert_eq!(s.total, 600);
            assert!(s.accuracy() <= 0.58, "{s:?}");
            let (lo, _) = s.wilson95();
            assert!(lo <= 0.5, "{s:?}");
        }
        assert!(best(&scores).is_some_and(|b| b.accuracy() <= 0.58));
    }

    #[test]
    fn empty_and_one_class_inputs_predict_nothing() {
        assert!(evaluate(&[], 1).iter().all(|s| s.total == 0));
        let one: Vec<Sample> = (0..10).map(|_| sample(&[true], true)).collect();
        assert!(evaluate(&one, 1).iter().all(|s| s.total == 0));
    }
}
