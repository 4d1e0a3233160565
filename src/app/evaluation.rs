//! Where entry criteria are evaluated. The static cost limits (`domain::criteria::cost`) are
//! the first line of defence; this is the second, for an estimate that turns out wrong.
//!
//! - Cheap criteria, as nearly all are, are evaluated inline on the calling task: a thread
//!   hand-off would cost more than the evaluation.
//! - Costlier ones run on the blocking pool, at most [`concurrent_evaluations`] at a time, so
//!   that they never hold an async worker that other calls (of any tenant) are waiting for.
//! - A caller waits at most the evaluation bound. The CEL interpreter cannot be interrupted, so
//!   an evaluation that overruns keeps its thread (and its permit) until it ends on its own; its
//!   caller is answered at once with the criterion reported unmet, and the expression is
//!   remembered as a runaway: later evaluations of it are refused without running it, until the
//!   process restarts. The permits bound how many cores runaways can occupy.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::AppError;
use crate::domain::criteria::CompiledExpression;
use crate::domain::criteria::cost::Cost;
use crate::domain::ids::StageKey;
use crate::domain::lead::Lead;
use crate::domain::policy::{CompiledPipeline, MovePlan, MoveViolation};

/// Stages whose criteria are estimated at most this are evaluated inline.
pub const INLINE_COST: Cost = 1_000;
/// How long a caller waits for criteria evaluated off the async workers.
pub const EVALUATION_BOUND: Duration = Duration::from_secs(1);
/// Runaway expressions remembered at most; beyond it, the set starts over.
const MAX_RUNAWAYS: usize = 1024;
const NONE_STARTED: usize = usize::MAX;

/// Half the cores, at least one: what offloaded evaluations may occupy at once.
pub fn concurrent_evaluations() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

pub struct CriteriaRunner {
    inline_cost: Cost,
    bound: Duration,
    permits: Arc<Semaphore>,
    runaways: Arc<Mutex<HashSet<String>>>,
}

impl Default for CriteriaRunner {
    fn default() -> Self {
        Self::new(INLINE_COST, EVALUATION_BOUND, concurrent_evaluations())
    }
}

impl CriteriaRunner {
    pub fn new(inline_cost: Cost, bound: Duration, concurrency: usize) -> Self {
        Self {
            inline_cost,
            bound,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            runaways: Arc::default(),
        }
    }

    /// [`CompiledPipeline::check_move`], evaluated as the module documentation describes.
    pub async fn check_move(
        &self,
        pipeline: &Arc<CompiledPipeline>,
        lead: &Lead,
        to: &StageKey,
    ) -> Result<Result<MovePlan, Vec<MoveViolation>>, AppError> {
        if pipeline.entry_cost(to) <= self.inline_cost {
            return Ok(pipeline.check_move(lead, to));
        }
        let target = to.clone();
        let outcome = self
            .offload(pipeline, lead, to, move |p, l, gate| {
                p.check_move_with(l, &target, gate)
            })
            .await?;
        Ok(outcome.map_err(|violation| vec![violation]).and_then(|r| r))
    }

    /// [`CompiledPipeline::check_entry`], evaluated as the module documentation describes.
    pub async fn check_entry(
        &self,
        pipeline: &Arc<CompiledPipeline>,
        lead: &Lead,
        stage: &StageKey,
    ) -> Result<Vec<MoveViolation>, AppError> {
        if pipeline.entry_cost(stage) <= self.inline_cost {
            return Ok(pipeline.check_entry(lead, stage));
        }
        let target = stage.clone();
        let outcome = self
            .offload(pipeline, lead, stage, move |p, l, gate| {
                p.check_entry_with(l, &target, gate)
            })
            .await?;
        Ok(outcome.unwrap_or_else(|violation| vec![violation]))
    }

    /// Runs `judge` on the blocking pool. `Err` is the violation that reports the criterion that
    /// was still being evaluated when the bound passed.
    async fn offload<T: Send + 'static>(
        &self,
        pipeline: &Arc<CompiledPipeline>,
        lead: &Lead,
        stage: &StageKey,
        judge: impl FnOnce(&CompiledPipeline, &Lead, &crate::domain::policy::Gate<'_>) -> T
        + Send
        + 'static,
    ) -> Result<Result<T, MoveViolation>, AppError> {
        let deadline = tokio::time::Instant::now() + self.bound;
        let permit = tokio::time::timeout_at(deadline, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        let started = Arc::new(AtomicUsize::new(NONE_STARTED));
        let evaluation = {
            let pipeline = Arc::clone(pipeline);
            let lead = lead.clone();
            let runaways = Arc::clone(&self.runaways);
            let started = Arc::clone(&started);
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let gate = |index: usize, expr: &CompiledExpression| {
                    if lock(&runaways).contains(expr.source()) {
                        return Err(runaway_reason());
                    }
                    started.store(index, Ordering::Release);
                    Ok(())
                };
                judge(&pipeline, &lead, &gate)
            })
        };
        match tokio::time::timeout_at(deadline, evaluation).await {
            Ok(Ok(judged)) => Ok(Ok(judged)),
            Ok(Err(_)) => Err(AppError::Unavailable(
                "evaluating the entry criteria failed; retry".into(),
            )),
            Err(_) => {
                let index = started.load(Ordering::Acquire);
                let reason = format!(
                    "not evaluated: evaluating it took longer than {} ms and it will not be \
                     evaluated again; simplify the criterion",
                    self.bound.as_millis()
                );
                let Some(violation) = pipeline.unevaluated(stage, index, &reason) else {
                    return Err(busy());
                };
                if let Some(source) = pipeline.criterion_source(stage, index) {
                    let mut runaways = lock(&self.runaways);
                    if runaways.len() >= MAX_RUNAWAYS {
                        runaways.clear();
                    }
                    runaways.insert(source.to_owned());
                }
                tracing::warn!(
                    stage = %stage,
                    criterion = %violation.subject,
                    "an entry criterion overran its evaluation bound and is no longer evaluated"
                );
                Ok(Err(violation))
            }
        }
    }
}

fn runaway_reason() -> String {
    "not evaluated: an earlier evaluation of it overran the evaluation bound; simplify the \
     criterion"
        .into()
}

fn busy() -> AppError {
    AppError::Unavailable("the server is busy evaluating entry criteria; retry".into())
}

fn lock(set: &Mutex<HashSet<String>>) -> std::sync::MutexGuard<'_, HashSet<String>> {
    set.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::criteria::cost::testing::costing_between;
    use crate::domain::ids::CriterionId;
    use crate::domain::pipeline::Criterion;
    use crate::domain::policy::{compile, default_pipeline};

    fn key(k: &str) -> StageKey {
        StageKey::parse(k).unwrap()
    }

    /// The default pipeline, with a costly criterion to enter qualification.
    fn costly_pipeline() -> Arc<CompiledPipeline> {
        let mut def = default_pipeline();
        def.stages[1].entry_criteria.push(Criterion {
            id: CriterionId::parse("costly").unwrap(),
            message: "Costly".into(),
            expression: costing_between(INLINE_COST * 2, INLINE_COST * 4),
        });
        Arc::new(compile(def).unwrap())
    }

    fn lead(stage: &str) -> Lead {
        let mut lead = crate::domain::criteria::testing::lead();
        lead.stage = key(stage);
        lead
    }

    #[tokio::test]
    async fn costly_stages_judge_as_cheap_ones_do() {
        let pipeline = costly_pipeline();
        assert!(pipeline.entry_cost(&key("qualification")) > INLINE_COST);
        let runner = CriteriaRunner::default();
        let lead = lead("lead_generation");
        for stage in ["qualification", "proposal", "nowhere"] {
            let offloaded = runner.check_move(&pipeline, &lead, &key(stage)).await;
            assert_eq!(
                offloaded.unwrap(),
                pipeline.check_move(&lead, &key(stage)),
                "{stage}"
            );
            let entry = runner.check_entry(&pipeline, &lead, &key(stage)).await;
            assert_eq!(entry.unwrap(), pipeline.check_entry(&lead, &key(stage)));
        }
    }

    /// Long enough for the thread to start on a busy machine.
    const BOUND: Duration = Duration::from_millis(200);

    /// An evaluation that overruns: the gate lets the first criterion of proposal start, then
    /// it takes far longer than [`BOUND`].
    fn overrun(
        pipeline: &CompiledPipeline,
    ) -> impl FnOnce(
        &CompiledPipeline,
        &Lead,
        &crate::domain::policy::Gate<'_>,
    ) -> Result<(), String>
    + Send
    + 'static {
        let source = pipeline.criterion_source(&key("proposal"), 0).unwrap();
        let expr = crate::domain::criteria::compile(source).unwrap();
        move |_, _, gate| {
            gate(0, &expr)?;
            std::thread::sleep(BOUND * 6);
            Ok(())
        }
    }

    #[tokio::test]
    async fn overruns_are_answered_at_once_and_not_run_again() {
        let runner = CriteriaRunner::new(0, BOUND, 2);
        let pipeline = Arc::new(compile(default_pipeline()).unwrap());
        let lead = lead("qualification");
        let proposal = key("proposal");
        let started = std::time::Instant::now();
        let violation = runner
            .offload(&pipeline, &lead, &proposal, overrun(&pipeline))
            .await
            .unwrap()
            .unwrap_err();
        assert!(started.elapsed() < BOUND * 5);
        assert_eq!(violation.subject, "bant_budget");
        assert!(
            violation.description.contains("took longer than 200 ms"),
            "{}",
            violation.description
        );
        // The same expression is refused without running, in any pipeline.
        let skipped = runner
            .offload(&pipeline, &lead, &proposal, overrun(&pipeline))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(skipped, Err(runaway_reason()));
        let violations = runner
            .check_move(&pipeline, &lead, &proposal)
            .await
            .unwrap()
            .unwrap_err();
        let budget = violations
            .iter()
            .find(|v| v.subject == "bant_budget")
            .unwrap();
        assert!(
            budget
                .description
                .contains("an earlier evaluation of it overran"),
            "{}",
            budget.description
        );
    }

    #[tokio::test]
    async fn runaways_occupy_at_most_the_permits() {
        let runner = CriteriaRunner::new(0, BOUND, 1);
        let pipeline = Arc::new(compile(default_pipeline()).unwrap());
        let lead = lead("qualification");
        let proposal = key("proposal");
        let first = runner
            .offload(&pipeline, &lead, &proposal, overrun(&pipeline))
            .await;
        assert!(first.unwrap().is_err());
        // The overrunning evaluation still holds the only permit.
        let second = runner
            .offload(&pipeline, &lead, &proposal, |_, _, _| ())
            .await;
        assert!(matches!(second, Err(AppError::Unavailable(_))));
        tokio::time::sleep(BOUND * 6).await;
        let third = runner
            .offload(&pipeline, &lead, &proposal, |_, _, _| ())
            .await;
        assert!(matches!(third, Ok(Ok(()))));
    }
}
