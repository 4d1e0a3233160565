//! An absorbing Markov chain over a pipeline's stages, learned from observed transitions and
//! smoothed towards the configured stage probabilities.

use nalgebra::{DMatrix, DVector};

use crate::pipeline::{PipelineDefinition, StageKind};

/// Observed moves between stages (indices into `PipelineDefinition::stages`). Counts are `f64`
/// so that callers may weight or decay them.
#[derive(Debug, Clone, PartialEq)]
pub struct TransitionCounts {
    counts: Vec<Vec<f64>>,
}

impl TransitionCounts {
    pub fn new(stages: usize) -> Self {
        Self {
            counts: vec![vec![0.0; stages]; stages],
        }
    }

    pub fn stages(&self) -> usize {
        self.counts.len()
    }

    pub fn add(&mut self, from: usize, to: usize, count: f64) {
        self.counts[from][to] += count;
    }

    /// Observed visits of `from` that ended with a move.
    pub fn exits(&self, from: usize) -> f64 {
        self.counts.get(from).map_or(0.0, |row| row.iter().sum())
    }

    pub fn count(&self, from: usize, to: usize) -> f64 {
        self.counts
            .get(from)
            .and_then(|row| row.get(to))
            .copied()
            .unwrap_or(0.0)
    }

    fn is_empty(&self) -> bool {
        self.counts.iter().flatten().all(|c| *c == 0.0)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChainModel {
    /// Row-stochastic over stages; closed stages are absorbing (a 1 on the diagonal).
    pub transition: Vec<Vec<f64>>,
    /// P(eventually won | now in stage).
    pub win_probability: Vec<f64>,
    /// Observed exits per stage, the evidence behind each row.
    pub exits: Vec<f64>,
}

/// The prior row of each open stage: on to the next open stage (or the first won stage after the
/// last open one) with a = p_i / p_next, else to the first lost stage. Chaining these rows
/// multiplies the a's back to p_i, so the prior chain alone reproduces the configured P(win)
/// whenever the configured probabilities do not decrease along the pipeline.
pub fn prior_transition(def: &PipelineDefinition) -> Vec<Vec<f64>> {
    let n = def.stages.len();
    let open: Vec<usize> = (0..n)
        .filter(|&i| def.stages[i].kind == StageKind::Open)
        .collect();
    let won = def.stages.iter().position(|s| s.kind == StageKind::Won);
    let lost = def.stages.iter().position(|s| s.kind == StageKind::Lost);
    let mut prior = vec![vec![0.0; n]; n];
    for (i, row) in prior.iter_mut().enumerate() {
        if def.stages[i].kind.is_closed() {
            row[i] = 1.0;
        }
    }
    for (k, &i) in open.iter().enumerate() {
        let next = open.get(k + 1).copied().or(won);
        let p_next = next.map_or(0.0, |j| match def.stages[j].kind {
            StageKind::Won => 1.0,
            _ => def.stages[j].probability,
        });
        let a = if p_next > 0.0 {
            (def.stages[i].probability / p_next).clamp(0.0, 1.0)
        } else {
            0.0
        };
        if let Some(j) = next {
            prior[i][j] += a;
        }
        // A pipeline without a lost stage leaks this mass; it still counts as "not won".
        if let Some(l) = lost {
            prior[i][l] += 1.0 - a;
        }
    }
    prior
}

/// Posterior-mean transition rows (Dirichlet prior of weight `prior_strength` per open stage) and
/// the absorption probabilities into won stages. With no data at all the configured stage
/// probabilities are returned as they are.
pub fn fit_chain(
    def: &PipelineDefinition,
    counts: &TransitionCounts,
    prior_strength: f64,
) -> ChainModel {
    let n = def.stages.len();
    let alpha = prior_strength.max(0.0);
    let mut transition = prior_transition(def);
    for (i, row) in transition.iter_mut().enumerate() {
        if def.stages[i].kind.is_closed() {
            continue;
        }
        let n_i = counts.exits(i);
        if n_i + alpha <= 0.0 {
            continue;
        }
        for (j, cell) in row.iter_mut().enumerate() {
            *cell = (counts.count(i, j) + alpha * *cell) / (n_i + alpha);
        }
    }
    let configured: Vec<f64> = def.stages.iter().map(configured_probability).collect();
    let win_probability = if counts.is_empty() {
        configured
    } else {
        solve_win_probability(def, &transition, &configured)
    };
    ChainModel {
        transition,
        win_probability,
        exits: (0..n).map(|i| counts.exits(i)).collect(),
    }
}

fn configured_probability(stage: &crate::pipeline::Stage) -> f64 {
    match stage.kind {
        StageKind::Won => 1.0,
        StageKind::Lost => 0.0,
        StageKind::Open => stage.probability,
    }
}

/// P(absorbed in a won stage | start in stage) for a transition matrix over `def`'s stages.
///
/// Open stages that cannot reach any closed stage (a cycle with no way out) make I − Q singular;
/// they get `fallback[i]` instead, and the others are solved with those values held fixed.
pub fn solve_win_probability(
    def: &PipelineDefinition,
    transition: &[Vec<f64>],
    fallback: &[f64],
) -> Vec<f64> {
    let n = def.stages.len();
    let kind = |i: usize| def.stages[i].kind;
    let mut result: Vec<f64> = (0..n)
        .map(|i| match kind(i) {
            StageKind::Won => 1.0,
            StageKind::Lost => 0.0,
            StageKind::Open => fallback[i],
        })
        .collect();

    // Open stages from which some closed stage is reachable, by backward search from the closed.
    let mut reaches = vec![false; n];
    let mut frontier: Vec<usize> = (0..n).filter(|&i| kind(i).is_closed()).collect();
    for &i in &frontier {
        reaches[i] = true;
    }
    while let Some(j) = frontier.pop() {
        for i in 0..n {
            if !reaches[i] && transition[i][j] > 0.0 {
                reaches[i] = true;
                frontier.push(i);
            }
        }
    }
    let solvable: Vec<usize> = (0..n)
        .filter(|&i| kind(i) == StageKind::Open && reaches[i])
        .collect();
    if solvable.is_empty() {
        return result;
    }

    // x = Q x + b over the solvable stages, where b collects the mass into stages with known
    // values: won (1), lost (0) and stuck open stages (their fallback).
    let m = solvable.len();
    let mut a = DMatrix::<f64>::identity(m, m);
    let mut b = DVector::<f64>::zeros(m);
    let position = |s: usize| solvable.iter().position(|&x| x == s);
    for (r, &i) in solvable.iter().enumerate() {
        for (j, &p) in transition[i].iter().enumerate() {
            match position(j) {
                Some(c) => a[(r, c)] -= p,
                None => b[r] += p * result[j],
            }
        }
    }
    if let Some(x) = a.lu().solve(&b) {
        for (r, &i) in solvable.iter().enumerate() {
            if x[r].is_finite() {
                result[i] = x[r].clamp(0.0, 1.0);
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::default_pipeline;

    // default_pipeline(): 0 lead_generation .1, 1 qualification .2, 2 proposal .4,
    // 3 negotiation .7, 4 closed_won, 5 closed_lost.
    const WON: usize = 4;
    const LOST: usize = 5;

    #[test]
    fn no_data_gives_the_configured_probabilities_exactly() {
        let def = default_pipeline();
        for alpha in [0.0, 1.0, 10.0] {
            let model = fit_chain(&def, &TransitionCounts::new(6), alpha);
            assert_eq!(model.win_probability, vec![0.1, 0.2, 0.4, 0.7, 1.0, 0.0]);
            assert_eq!(model.exits, vec![0.0; 6]);
        }
    }

    #[test]
    fn the_prior_chain_itself_reproduces_the_configured_probabilities() {
        let def = default_pipeline();
        let prior = prior_transition(&def);
        assert!((prior[0][1] - 0.5).abs() < 1e-12);
        assert!((prior[0][LOST] - 0.5).abs() < 1e-12);
        assert!((prior[3][WON] - 0.7).abs() < 1e-12);
        for row in &prior {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        let solved = solve_win_probability(&def, &prior, &[0.0; 6]);
        for (got, want) in solved.iter().zip([0.1, 0.2, 0.4, 0.7, 1.0, 0.0]) {
            assert!((got - want).abs() < 1e-12, "{solved:?}");
        }
        // A single observation barely moves a strongly smoothed row.
        let mut counts = TransitionCounts::new(6);
        counts.add(0, 1, 1.0);
        let model = fit_chain(&def, &counts, 1e6);
        assert!((model.win_probability[0] - 0.1).abs() < 1e-5);
    }

    /// lead_generation → qualification .6 / lost .4; qualification → proposal .5, back to
    /// lead_generation .1, lost .4; proposal → negotiation .5, lost .5; negotiation → won .8,
    /// back to proposal .1, lost .1.
    fn known_matrix() -> Vec<Vec<f64>> {
        let mut t = vec![vec![0.0; 6]; 6];
        t[0][1] = 0.6;
        t[0][LOST] = 0.4;
        t[1][2] = 0.5;
        t[1][0] = 0.1;
        t[1][LOST] = 0.4;
        t[2][3] = 0.5;
        t[2][LOST] = 0.5;
        t[3][WON] = 0.8;
        t[3][2] = 0.1;
        t[3][LOST] = 0.1;
        t[WON][WON] = 1.0;
        t[LOST][LOST] = 1.0;
        t
    }

    #[test]
    fn large_counts_recover_the_matrix_and_its_absorption() {
        let def = default_pipeline();
        let truth = known_matrix();
        let mut counts = TransitionCounts::new(6);
        for (i, row) in truth.iter().enumerate().take(4) {
            for (j, p) in row.iter().enumerate() {
                counts.add(i, j, p * 1e6);
            }
        }
        let model = fit_chain(&def, &counts, 10.0);
        for (learned, true_row) in model.transition.iter().zip(&truth) {
            for (got, want) in learned.iter().zip(true_row) {
                assert!((got - want).abs() < 1e-4, "{learned:?} vs {true_row:?}");
            }
        }
        // By hand: w3 = .8 + .1 w2, w2 = .5 w3 → w2 = .4/.95, w3 = .8/.95;
        // w1 = .5 w2 + .1 w0, w0 = .6 w1 → w1 = .5 w2 / .94, w0 = .6 w1.
        let w2 = 0.4 / 0.95;
        let w3 = 0.8 / 0.95;
        let w1 = 0.5 * w2 / 0.94;
        let w0 = 0.6 * w1;
        let want = [w0, w1, w2, w3, 1.0, 0.0];
        for (got, want) in model.win_probability.iter().zip(want) {
            assert!((got - want).abs() < 1e-4, "{:?}", model.win_probability);
        }
        assert!((model.exits[0] - 1e6).abs() < 1e-6);
    }

    #[test]
    fn exact_solution_of_a_known_chain() {
        let def = default_pipeline();
        let solved = solve_win_probability(&def, &known_matrix(), &[0.0; 6]);
        let w2 = 0.4 / 0.95;
        let w1 = 0.5 * w2 / 0.94;
        assert!((solved[3] - 0.8 / 0.95).abs() < 1e-12);
        assert!((solved[2] - w2).abs() < 1e-12);
        assert!((solved[1] - w1).abs() < 1e-12);
        assert!((solved[0] - 0.6 * w1).abs() < 1e-12);
    }

    #[test]
    fn a_cycle_without_exit_falls_back_to_the_configured_probability() {
        let def = default_pipeline();
        let mut counts = TransitionCounts::new(6);
        counts.add(1, 2, 5.0);
        counts.add(2, 1, 5.0);
        counts.add(3, WON, 1.0);
        counts.add(0, 1, 1.0);
        let model = fit_chain(&def, &counts, 0.0);
        assert_eq!(model.win_probability[1], 0.2);
        assert_eq!(model.win_probability[2], 0.4);
        // Stage 0 leads only into the stuck cycle, so it cannot be solved either.
        assert_eq!(model.win_probability[0], 0.1);
        assert!((model.win_probability[3] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn unobserved_rows_follow_the_prior_with_learned_downstream() {
        let def = default_pipeline();
        let mut counts = TransitionCounts::new(6);
        counts.add(3, WON, 90.0);
        counts.add(3, LOST, 10.0);
        let model = fit_chain(&def, &counts, 0.0);
        assert!((model.win_probability[3] - 0.9).abs() < 1e-12);
        // proposal's prior: .4/.7 onwards, so .4/.7 · .9.
        assert!((model.win_probability[2] - 0.4 / 0.7 * 0.9).abs() < 1e-12);
    }
}
