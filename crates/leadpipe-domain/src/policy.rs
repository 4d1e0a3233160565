//! The transition policy: which moves between stages a pipeline allows, and which entry criteria
//! a lead must meet. Pure: the caller loads the lead and pipeline and applies the plan.

use std::collections::HashSet;

use super::FieldViolation;
use super::criteria::cost::{Cost, MAX_CRITERION_COST, MAX_STAGE_COST};
use super::criteria::{self, Activation, CompiledExpression};
use super::ids::{CriterionId, StageKey};
use super::lead::{Lead, validate_text};
use super::pipeline::{Criterion, MovementRules, PipelineDefinition, Stage, StageKind};

pub const MAX_STAGES: usize = 50;
pub const MAX_CRITERIA_PER_STAGE: usize = 20;
pub const MAX_DISPLAY_NAME_LEN: usize = 200;
pub const MAX_CRITERION_MESSAGE_LEN: usize = 500;

/// A pipeline definition that passed validation, with every criterion compiled, ready to judge
/// moves. Built once per pipeline version and shared across requests.
#[derive(Debug)]
pub struct CompiledPipeline {
    definition: PipelineDefinition,
    /// Parallel to `definition.stages[i].entry_criteria`.
    criteria: Vec<Vec<Check>>,
    /// The estimated cost of evaluating each stage's criteria, parallel to `definition.stages`.
    stage_costs: Vec<Cost>,
}

/// How a criterion is judged.
#[derive(Debug)]
enum Check {
    Evaluate(CompiledExpression),
    /// A stored criterion that today's limits refuse: never evaluated, always unmet, with this
    /// reason. Its pipeline still serves every move that does not enter its stage.
    Refuse(String),
}

/// Whether pipelines are being saved or read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    New,
    Stored,
}

/// Validates `def` and compiles its criteria, reporting every problem at once with field paths
/// relative to the Pipeline message.
pub fn compile(def: PipelineDefinition) -> Result<CompiledPipeline, Vec<FieldViolation>> {
    compile_in(def, Mode::New)
}

/// Compiles a pipeline read from storage. Its criteria were checked when it was saved, so they
/// are not dry-run again; one above today's cost limits (saved before there were any) is never
/// evaluated, and moves into its stage are refused naming it, rather than every move there
/// burning the CPU.
pub fn compile_stored(def: PipelineDefinition) -> Result<CompiledPipeline, Vec<FieldViolation>> {
    compile_in(def, Mode::Stored)
}

fn compile_in(
    def: PipelineDefinition,
    mode: Mode,
) -> Result<CompiledPipeline, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    if let Err(e) = validate_text(&def.display_name, MAX_DISPLAY_NAME_LEN) {
        violations.push(FieldViolation::new("pipeline.display_name", e));
    }
    validate_stage_list(&def.stages, &mut violations);
    let mut seen_keys = HashSet::new();
    let mut criteria = Vec::with_capacity(def.stages.len());
    for (i, stage) in def.stages.iter().enumerate() {
        let path = format!("pipeline.stages[{i}]");
        if !seen_keys.insert(&stage.key) {
            violations.push(FieldViolation::new(
                format!("{path}.key"),
                format!("duplicate stage key \"{}\"", stage.key),
            ));
        }
        validate_stage(&path, stage, &mut violations);
        criteria.push(compile_criteria(
            &path,
            &stage.entry_criteria,
            mode,
            &mut violations,
        ));
    }
    let stage_costs = criteria
        .iter()
        .map(|checks| {
            checks.iter().fold(0, |sum: Cost, check| match check {
                Check::Evaluate(expr) => sum.saturating_add(expr.cost()),
                Check::Refuse(_) => sum,
            })
        })
        .collect();
    if violations.is_empty() {
        Ok(CompiledPipeline {
            definition: def,
            criteria,
            stage_costs,
        })
    } else {
        Err(violations)
    }
}

fn validate_stage_list(stages: &[Stage], violations: &mut Vec<FieldViolation>) {
    if stages.len() > MAX_STAGES {
        violations.push(FieldViolation::new(
            "pipeline.stages",
            format!(
                "at most {MAX_STAGES} stages are allowed, got {}",
                stages.len()
            ),
        ));
    }
    if !stages.iter().any(|s| s.kind == StageKind::Open) {
        violations.push(FieldViolation::new(
            "pipeline.stages",
            "at least one open stage is required",
        ));
    }
    if !stages.iter().any(|s| s.kind == StageKind::Won) {
        violations.push(FieldViolation::new(
            "pipeline.stages",
            "at least one won stage is required",
        ));
    }
    if let Some(first) = stages.first()
        && first.kind != StageKind::Open
    {
        violations.push(FieldViolation::new(
            "pipeline.stages[0].kind",
            "the first stage must be open: new leads enter it",
        ));
    }
}

fn validate_stage(path: &str, stage: &Stage, violations: &mut Vec<FieldViolation>) {
    if let Err(e) = validate_text(&stage.display_name, MAX_DISPLAY_NAME_LEN) {
        violations.push(FieldViolation::new(format!("{path}.display_name"), e));
    }
    if !(stage.probability.is_finite() && (0.0..=1.0).contains(&stage.probability)) {
        violations.push(FieldViolation::new(
            format!("{path}.probability"),
            format!("must be between 0 and 1, got {}", stage.probability),
        ));
    }
    let count = stage.entry_criteria.len();
    if count > MAX_CRITERIA_PER_STAGE {
        violations.push(FieldViolation::new(
            format!("{path}.entry_criteria"),
            format!("at most {MAX_CRITERIA_PER_STAGE} criteria are allowed per stage, got {count}"),
        ));
    }
}

/// Compiles every criterion of a stage, recording the problems of each. Compiling (with its dry
/// run) is the costly check, so a stage over the limit only has its first criteria compiled: the
/// request is refused anyway. The criteria's estimated costs add up to the stage's, which
/// [`MAX_STAGE_COST`] bounds: the criterion that takes the sum over it is the one refused.
fn compile_criteria(
    stage_path: &str,
    criteria: &[Criterion],
    mode: Mode,
    violations: &mut Vec<FieldViolation>,
) -> Vec<Check> {
    let mut seen_ids: HashSet<&CriterionId> = HashSet::new();
    let mut compiled = Vec::with_capacity(criteria.len());
    let mut stage_cost: Cost = 0;
    for (j, criterion) in criteria.iter().enumerate() {
        let path = format!("{stage_path}.entry_criteria[{j}]");
        if !seen_ids.insert(&criterion.id) {
            violations.push(FieldViolation::new(
                format!("{path}.id"),
                format!("duplicate criterion id \"{}\" in this stage", criterion.id),
            ));
        }
        if let Err(e) = validate_message(&criterion.message) {
            violations.push(FieldViolation::new(format!("{path}.message"), e));
        }
        if j >= MAX_CRITERIA_PER_STAGE {
            continue;
        }
        let result = match mode {
            Mode::New => criteria::compile(&criterion.expression),
            Mode::Stored => criteria::compile_stored(&criterion.expression),
        };
        let expr = match result {
            Ok(expr) => expr,
            Err(e) => {
                let description = match e.estimated_cost {
                    Some(_) => format!("criterion \"{}\": {e}", criterion.id),
                    None => e.to_string(),
                };
                violations.push(FieldViolation::new(
                    format!("{path}.expression"),
                    description,
                ));
                continue;
            }
        };
        let cost = expr.cost();
        let refusal = if cost > MAX_CRITERION_COST {
            // Only stored expressions get here: new ones are refused by `criteria::compile`.
            Some(format!(
                "its estimated cost is {cost}, above the limit of {MAX_CRITERION_COST} per \
                 criterion"
            ))
        } else if stage_cost.saturating_add(cost) > MAX_STAGE_COST {
            Some(format!(
                "its estimated cost of {cost} takes the stage's criteria to {}, above the limit \
                 of {MAX_STAGE_COST} per stage; simplify or remove some of them",
                stage_cost.saturating_add(cost)
            ))
        } else {
            None
        };
        match (refusal, mode) {
            (None, _) => {
                stage_cost += cost;
                compiled.push(Check::Evaluate(expr));
            }
            (Some(reason), Mode::New) => violations.push(FieldViolation::new(
                format!("{path}.expression"),
                format!("criterion \"{}\": {reason}", criterion.id),
            )),
            (Some(reason), Mode::Stored) => compiled.push(Check::Refuse(format!(
                "not evaluated: {reason}; update the pipeline"
            ))),
        }
    }
    compiled
}

fn validate_message(message: &str) -> Result<(), String> {
    if message.trim().is_empty() {
        return Err("is required: it tells users what to do to meet the criterion".into());
    }
    validate_text(message, MAX_CRITERION_MESSAGE_LEN)
}

/// Asked before a criterion (its index in the stage, and its expression) is evaluated; an `Err`
/// skips it, reporting it unmet with that reason.
pub type Gate<'a> = dyn Fn(usize, &CompiledExpression) -> Result<(), String> + Sync + 'a;

fn evaluate_every_criterion(_: usize, _: &CompiledExpression) -> Result<(), String> {
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    /// An entry criterion of the target stage is not met.
    StageCriterion,
    /// The movement rules forbid the move itself.
    Transition,
}

impl ViolationKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ViolationKind::StageCriterion => "STAGE_CRITERION",
            ViolationKind::Transition => "TRANSITION",
        }
    }
}

/// Why a move was refused: `subject` is a criterion id or `"<from>-><to>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveViolation {
    pub kind: ViolationKind,
    pub subject: String,
    pub description: String,
}

/// What an allowed move does to the lead.
#[derive(Debug, Clone, PartialEq)]
pub struct MovePlan {
    pub from: StageKey,
    pub to: StageKey,
    pub to_kind: StageKind,
    /// The target stage's default win probability.
    pub probability: f64,
    /// The target stage is won or lost.
    pub closes: bool,
    /// A closed lead goes back into an open stage.
    pub reopens: bool,
}

impl CompiledPipeline {
    pub fn definition(&self) -> &PipelineDefinition {
        &self.definition
    }

    /// The estimated cost of evaluating the entry criteria of `stage` (zero if there is no such
    /// stage): what a move there costs beyond its fixed work.
    pub fn entry_cost(&self, stage: &StageKey) -> Cost {
        self.definition
            .stage_index(stage)
            .map_or(0, |index| self.stage_costs[index])
    }

    /// Judges moving `lead` to `to`, reporting every problem at once: the transition's first,
    /// then each unmet entry criterion of `to` in definition order.
    pub fn check_move(&self, lead: &Lead, to: &StageKey) -> Result<MovePlan, Vec<MoveViolation>> {
        self.check_move_with(lead, to, &evaluate_every_criterion)
    }

    /// [`Self::check_move`], with `gate` asked before each criterion is evaluated: an `Err`
    /// reports the criterion unmet for that reason, without evaluating it.
    pub fn check_move_with(
        &self,
        lead: &Lead,
        to: &StageKey,
        gate: &Gate<'_>,
    ) -> Result<MovePlan, Vec<MoveViolation>> {
        let Some(to_index) = self.definition.stage_index(to) else {
            return Err(vec![self.unknown_stage(lead, to)]);
        };
        let target = &self.definition.stages[to_index];
        let transition = self.check_transition(lead, to_index);
        let mut violations: Vec<MoveViolation> = transition
            .as_ref()
            .err()
            .map(|description| MoveViolation {
                kind: ViolationKind::Transition,
                subject: format!("{}->{}", lead.stage, to),
                description: description.clone(),
            })
            .into_iter()
            .collect();
        violations.extend(self.unmet_criteria(lead, to_index, gate));
        match transition {
            Ok(reopens) if violations.is_empty() => Ok(MovePlan {
                from: lead.stage.clone(),
                to: to.clone(),
                to_kind: target.kind,
                probability: target.probability,
                closes: target.kind.is_closed(),
                reopens,
            }),
            _ => Err(violations),
        }
    }

    /// The unmet entry criteria of `stage`, without movement rules: for leads created in it.
    pub fn check_entry(&self, lead: &Lead, stage: &StageKey) -> Vec<MoveViolation> {
        self.check_entry_with(lead, stage, &evaluate_every_criterion)
    }

    /// [`Self::check_entry`] with a gate, as [`Self::check_move_with`].
    pub fn check_entry_with(
        &self,
        lead: &Lead,
        stage: &StageKey,
        gate: &Gate<'_>,
    ) -> Vec<MoveViolation> {
        match self.definition.stage_index(stage) {
            Some(index) => self.unmet_criteria(lead, index, gate),
            None => vec![self.unknown_stage(lead, stage)],
        }
    }

    /// The expression of the `index`th entry criterion of `stage`.
    pub fn criterion_source(&self, stage: &StageKey, index: usize) -> Option<&str> {
        let stage = self.definition.stage(stage)?;
        Some(stage.entry_criteria.get(index)?.expression.as_str())
    }

    /// The violation reporting the `index`th entry criterion of `stage` unmet because it was
    /// not evaluated, for `reason`; `None` if there is no such criterion.
    pub fn unevaluated(
        &self,
        stage: &StageKey,
        index: usize,
        reason: &str,
    ) -> Option<MoveViolation> {
        let stage = self.definition.stage(stage)?;
        let criterion = stage.entry_criteria.get(index)?;
        Some(MoveViolation {
            kind: ViolationKind::StageCriterion,
            subject: criterion.id.to_string(),
            description: format!("{} ({reason})", criterion.message),
        })
    }

    fn unknown_stage(&self, lead: &Lead, to: &StageKey) -> MoveViolation {
        MoveViolation {
            kind: ViolationKind::Transition,
            subject: format!("{}->{}", lead.stage, to),
            description: format!(
                "stage \"{to}\" does not exist in pipeline \"{}\"",
                lead.pipeline_id
            ),
        }
    }

    fn unmet_criteria(
        &self,
        lead: &Lead,
        stage_index: usize,
        gate: &Gate<'_>,
    ) -> Vec<MoveViolation> {
        let definitions = &self.definition.stages[stage_index].entry_criteria;
        let compiled = &self.criteria[stage_index];
        if compiled.is_empty() {
            return Vec::new();
        }
        let activation = Activation::new(lead);
        definitions
            .iter()
            .zip(compiled)
            .enumerate()
            .filter_map(|(index, (criterion, check))| {
                let evaluated = match check {
                    Check::Evaluate(expr) => gate(index, expr).map(|()| activation.evaluate(expr)),
                    Check::Refuse(reason) => Err(reason.clone()),
                };
                let description = match evaluated {
                    Ok(Ok(true)) => return None,
                    Ok(Ok(false)) => criterion.message.clone(),
                    Ok(Err(e)) => format!("{} (evaluation failed: {e})", criterion.message),
                    Err(reason) => format!("{} ({reason})", criterion.message),
                };
                Some(MoveViolation {
                    kind: ViolationKind::StageCriterion,
                    subject: criterion.id.to_string(),
                    description,
                })
            })
            .collect()
    }

    /// Applies the movement rules: `Ok(reopens)` or why the move is not allowed.
    fn check_transition(&self, lead: &Lead, to_index: usize) -> Result<bool, String> {
        let stages = &self.definition.stages;
        let rules = self.definition.rules;
        let to = &stages[to_index];
        let Some(from_index) = self.definition.stage_index(&lead.stage) else {
            // The lead sits in a stage the pipeline no longer has. Refusing every move would
            // strand it, so any move out is allowed; the target's criteria still apply.
            return Ok(lead.close_time.is_some() && !to.kind.is_closed());
        };
        let from = &stages[from_index];
        if from_index == to_index {
            return Err(format!("the lead is already in stage \"{}\"", to.key));
        }
        match (from.kind.is_closed(), to.kind) {
            (true, StageKind::Open) if rules.allow_reopen => Ok(true),
            (true, StageKind::Open) => Err(format!(
                "the lead is closed in stage \"{}\" and this pipeline does not allow reopening \
                 closed leads",
                from.key
            )),
            (true, _) => Err(format!(
                "the lead is already closed in stage \"{}\"; a closed lead can only be reopened \
                 into an open stage, not moved to another closed stage",
                from.key
            )),
            (false, StageKind::Lost) => Ok(false),
            (false, StageKind::Won) => self.check_win(from_index, rules).map(|()| false),
            (false, StageKind::Open) => self
                .check_open_move(from_index, to_index, rules)
                .map(|()| false),
        }
    }

    fn check_win(&self, from_index: usize, rules: MovementRules) -> Result<(), String> {
        let last_open = self.open_stages().last();
        if rules.allow_skip || last_open == Some(from_index) {
            return Ok(());
        }
        let last_open_key = last_open.map_or("", |i| self.definition.stages[i].key.as_str());
        Err(format!(
            "a lead can only be won from the last open stage \"{last_open_key}\", because this \
             pipeline does not allow skipping stages"
        ))
    }

    fn check_open_move(
        &self,
        from_index: usize,
        to_index: usize,
        rules: MovementRules,
    ) -> Result<(), String> {
        let stages = &self.definition.stages;
        if to_index < from_index {
            return if rules.allow_backward {
                Ok(())
            } else {
                Err(format!(
                    "this pipeline does not allow moving back from stage \"{}\" to the earlier \
                     stage \"{}\"",
                    stages[from_index].key, stages[to_index].key
                ))
            };
        }
        let skipped: Vec<String> = self
            .open_stages()
            .filter(|&i| from_index < i && i < to_index)
            .map(|i| format!("\"{}\"", stages[i].key))
            .collect();
        if skipped.is_empty() || rules.allow_skip {
            Ok(())
        } else {
            Err(format!(
                "moving from stage \"{}\" to \"{}\" would skip {}; this pipeline only allows \
                 moving forward one open stage at a time",
                stages[from_index].key,
                stages[to_index].key,
                skipped.join(", ")
            ))
        }
    }

    /// Indices of the open stages, in definition order.
    fn open_stages(&self) -> impl DoubleEndedIterator<Item = usize> + '_ {
        self.definition
            .stages
            .iter()
            .enumerate()
            .filter(|(_, s)| s.kind == StageKind::Open)
            .map(|(i, _)| i)
    }
}

/// The pipeline every tenant starts with: a classic funnel with BANT qualification.
pub fn default_pipeline() -> PipelineDefinition {
    let stage = |key: &str, name: &str, kind, probability, rotting_days, criteria| Stage {
        key: StageKey::parse(key).expect("a valid default stage key"),
        display_name: name.to_owned(),
        kind,
        probability,
        rotting_days,
        entry_criteria: criteria,
    };
    let amount_positive =
        |message: &str| criterion("amount_positive", message, "lead.amount.value > 0.0");
    PipelineDefinition {
        display_name: "Default sales pipeline".to_owned(),
        stages: vec![
            stage(
                "lead_generation",
                "Lead generation",
                StageKind::Open,
                0.10,
                14,
                vec![],
            ),
            stage(
                "qualification",
                "Qualification",
                StageKind::Open,
                0.20,
                21,
                vec![criterion(
                    "contact_known",
                    "A contact name or e-mail address is known",
                    "lead.contact_name != \"\" || lead.contact_email != \"\"",
                )],
            ),
            stage(
                "proposal",
                "Proposal",
                StageKind::Open,
                0.40,
                30,
                vec![
                    criterion(
                        "bant_budget",
                        "BANT: a budget above zero is recorded",
                        "lead.bant.budget.value > 0.0",
                    ),
                    criterion(
                        "bant_authority",
                        "BANT: the decision maker (authority) is named",
                        "lead.bant.authority != \"\"",
                    ),
                    criterion(
                        "bant_need",
                        "BANT: the need is stated",
                        "lead.bant.need != \"\"",
                    ),
                    criterion(
                        "bant_timeline",
                        "BANT: the purchase timeline is set",
                        "lead.has_bant_timeline",
                    ),
                ],
            ),
            stage(
                "negotiation",
                "Negotiation",
                StageKind::Open,
                0.70,
                30,
                vec![amount_positive("The proposal value (amount) is above zero")],
            ),
            stage(
                "closed_won",
                "Closed won",
                StageKind::Won,
                1.0,
                0,
                vec![amount_positive("The deal amount is above zero")],
            ),
            stage(
                "closed_lost",
                "Closed lost",
                StageKind::Lost,
                0.0,
                0,
                vec![criterion(
                    "lost_reason",
                    "A lost reason is recorded",
                    "lead.lost_reason != \"\"",
                )],
            ),
        ],
        rules: MovementRules::default(),
    }
}

fn criterion(id: &str, message: &str, expression: &str) -> Criterion {
    Criterion {
        id: CriterionId::parse(id).expect("a valid default criterion id"),
        message: message.to_owned(),
        expression: expression.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::ids::{LeadId, PipelineId};
    use crate::lead::{Bant, LeadFields};
    use crate::money::Money;

    fn key(k: &str) -> StageKey {
        StageKey::parse(k).unwrap()
    }

    fn pipeline(rules: MovementRules) -> CompiledPipeline {
        let mut def = default_pipeline();
        def.rules = rules;
        compile(def).expect("the default pipeline compiles")
    }

    fn default_compiled() -> CompiledPipeline {
        pipeline(MovementRules::default())
    }

    fn eur(units: i64) -> Option<Money> {
        Some(Money::parse("EUR", units, 0).unwrap())
    }

    /// A lead in `stage` that meets no criterion.
    fn bare_lead(stage: &str) -> Lead {
        let now = Utc::now();
        Lead {
            id: LeadId::generate(),
            fields: LeadFields {
                title: "Acme renewal".into(),
                company: String::new(),
                contact_name: String::new(),
                contact_email: String::new(),
                owner: String::new(),
                source: String::new(),
                amount: None,
                bant: Bant::default(),
                expected_close_time: None,
                labels: Default::default(),
                lost_reason: String::new(),
            },
            pipeline_id: PipelineId::default_pipeline(),
            stage: key(stage),
            win_probability: 0.1,
            create_time: now,
            update_time: now,
            stage_enter_time: now,
            close_time: None,
            version: 1,
            external_id: None,
            close_date_push_count: 0,
            first_expected_close_time: None,
        }
    }

    /// A lead in `stage` that meets every default criterion.
    fn qualified_lead(stage: &str) -> Lead {
        let mut lead = bare_lead(stage);
        let f = &mut lead.fields;
        f.contact_email = "dana@example.com".into();
        f.amount = eur(5000);
        f.bant = Bant {
            budget: eur(6000),
            authority: "CFO".into(),
            need: "Faster invoicing".into(),
            timeline: Some(Utc::now()),
        };
        f.lost_reason = "Went with a competitor".into();
        if StageKind::is_closed(default_pipeline().stage(&lead.stage).unwrap().kind) {
            lead.close_time = Some(Utc::now());
        }
        lead
    }

    fn subjects(violations: &[MoveViolation]) -> Vec<&str> {
        violations.iter().map(|v| v.subject.as_str()).collect()
    }

    fn transition_error(p: &CompiledPipeline, from: &str, to: &str) -> Option<MoveViolation> {
        match p.check_move(&qualified_lead(from), &key(to)) {
            Ok(_) => None,
            Err(violations) => {
                assert_eq!(violations.len(), 1, "{violations:?}");
                assert_eq!(violations[0].kind, ViolationKind::Transition);
                assert_eq!(violations[0].subject, format!("{from}->{to}"));
                Some(violations[0].clone())
            }
        }
    }

    #[test]
    fn compiled_pipelines_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<CompiledPipeline>();
        assert_send_sync::<std::sync::Arc<CompiledPipeline>>();
    }

    #[test]
    fn the_default_pipeline_compiles() {
        let p = default_compiled();
        let def = p.definition();
        assert_eq!(def.display_name, "Default sales pipeline");
        let keys: Vec<&str> = def.stages.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "lead_generation",
                "qualification",
                "proposal",
                "negotiation",
                "closed_won",
                "closed_lost"
            ]
        );
        assert_eq!(def.first_stage().kind, StageKind::Open);
        assert_eq!(def.rules, MovementRules::default());
    }

    /// From, to, the criteria a bare lead misses, and what meets them.
    type CriteriaCase = (
        &'static str,
        &'static str,
        &'static [&'static str],
        fn(&mut Lead),
    );

    #[test]
    fn default_criteria_refuse_then_allow() {
        let p = default_compiled();
        let cases: [CriteriaCase; 5] = [
            (
                "lead_generation",
                "qualification",
                &["contact_known"],
                |l| l.fields.contact_name = "Dana".into(),
            ),
            (
                "qualification",
                "proposal",
                &[
                    "bant_budget",
                    "bant_authority",
                    "bant_need",
                    "bant_timeline",
                ],
                |l| {
                    l.fields.bant = Bant {
                        budget: eur(1),
                        authority: "CFO".into(),
                        need: "Invoicing".into(),
                        timeline: Some(Utc::now()),
                    }
                },
            ),
            ("proposal", "negotiation", &["amount_positive"], |l| {
                l.fields.amount = eur(10)
            }),
            ("negotiation", "closed_won", &["amount_positive"], |l| {
                l.fields.amount = eur(10)
            }),
            ("qualification", "closed_lost", &["lost_reason"], |l| {
                l.fields.lost_reason = "No budget".into()
            }),
        ];
        for (from, to, unmet, fix) in cases {
            let mut lead = bare_lead(from);
            let violations = p.check_move(&lead, &key(to)).unwrap_err();
            assert_eq!(subjects(&violations), unmet, "{from}->{to}");
            assert!(
                violations
                    .iter()
                    .all(|v| v.kind == ViolationKind::StageCriterion)
            );
            fix(&mut lead);
            let plan = p.check_move(&lead, &key(to)).unwrap();
            assert_eq!(plan.from, key(from));
            assert_eq!(plan.to, key(to));
        }
    }

    #[test]
    fn criterion_violations_carry_the_message() {
        let p = default_compiled();
        let violations = p
            .check_move(&bare_lead("proposal"), &key("negotiation"))
            .unwrap_err();
        assert_eq!(
            violations[0].description,
            "The proposal value (amount) is above zero"
        );
        // Whitespace is not a value.
        let mut lead = bare_lead("lead_generation");
        lead.fields.contact_name = "   ".into();
        assert!(p.check_move(&lead, &key("qualification")).is_err());
    }

    #[test]
    fn a_failing_evaluation_is_an_unmet_criterion() {
        let mut def = default_pipeline();
        def.stages[1].entry_criteria = vec![criterion(
            "region",
            "The region label is EMEA",
            "lead.labels.region == \"emea\"",
        )];
        let p = compile(def).unwrap();
        let mut lead = bare_lead("lead_generation");
        let violations = p.check_move(&lead, &key("qualification")).unwrap_err();
        assert_eq!(violations[0].subject, "region");
        assert!(
            violations[0]
                .description
                .starts_with("The region label is EMEA (evaluation failed: "),
            "{}",
            violations[0].description
        );
        lead.fields.labels.insert("region".into(), "emea".into());
        assert!(p.check_move(&lead, &key("qualification")).is_ok());
    }

    #[test]
    fn plans_describe_the_move() {
        let p = default_compiled();
        let plan = p
            .check_move(&qualified_lead("negotiation"), &key("closed_won"))
            .unwrap();
        assert_eq!(
            plan,
            MovePlan {
                from: key("negotiation"),
                to: key("closed_won"),
                to_kind: StageKind::Won,
                probability: 1.0,
                closes: true,
                reopens: false,
            }
        );
        let plan = p
            .check_move(&qualified_lead("closed_lost"), &key("proposal"))
            .unwrap();
        assert!(plan.reopens && !plan.closes);
        assert_eq!(plan.probability, 0.40);
    }

    #[test]
    fn moving_to_the_current_stage_is_refused() {
        let p = default_compiled();
        for stage in ["lead_generation", "negotiation", "closed_won"] {
            let v = transition_error(&p, stage, stage).expect("refused");
            assert!(v.description.contains("already in stage"), "{v:?}");
        }
    }

    #[test]
    fn forward_moves_go_one_open_stage_at_a_time_unless_skipping_is_allowed() {
        let strict = default_compiled();
        assert!(transition_error(&strict, "lead_generation", "qualification").is_none());
        let v = transition_error(&strict, "lead_generation", "negotiation").expect("refused");
        assert!(
            v.description.contains("\"qualification\", \"proposal\""),
            "{v:?}"
        );

        let lenient = pipeline(MovementRules {
            allow_skip: true,
            ..MovementRules::default()
        });
        assert!(transition_error(&lenient, "lead_generation", "negotiation").is_none());
    }

    #[test]
    fn winning_needs_the_last_open_stage_unless_skipping_is_allowed() {
        let strict = default_compiled();
        assert!(transition_error(&strict, "negotiation", "closed_won").is_none());
        for from in ["lead_generation", "qualification", "proposal"] {
            let v = transition_error(&strict, from, "closed_won").expect("refused");
            assert!(v.description.contains("\"negotiation\""), "{v:?}");
        }
        let lenient = pipeline(MovementRules {
            allow_skip: true,
            ..MovementRules::default()
        });
        assert!(transition_error(&lenient, "lead_generation", "closed_won").is_none());
    }

    #[test]
    fn any_open_stage_may_lose() {
        let strict = pipeline(MovementRules {
            allow_skip: false,
            allow_backward: false,
            allow_reopen: false,
        });
        for from in [
            "lead_generation",
            "qualification",
            "proposal",
            "negotiation",
        ] {
            assert!(
                transition_error(&strict, from, "closed_lost").is_none(),
                "{from}"
            );
        }
    }

    #[test]
    fn backward_moves_follow_the_rules() {
        let default = default_compiled();
        assert!(transition_error(&default, "negotiation", "lead_generation").is_none());
        let forward_only = pipeline(MovementRules {
            allow_backward: false,
            ..MovementRules::default()
        });
        let v = transition_error(&forward_only, "negotiation", "qualification").expect("refused");
        assert!(v.description.contains("moving back"), "{v:?}");
    }

    #[test]
    fn closed_leads_reopen_only_into_open_stages_and_only_when_allowed() {
        let default = default_compiled();
        for (from, to) in [
            ("closed_won", "negotiation"),
            ("closed_lost", "lead_generation"),
        ] {
            let plan = default.check_move(&qualified_lead(from), &key(to)).unwrap();
            assert!(plan.reopens);
        }
        for (from, to) in [("closed_won", "closed_lost"), ("closed_lost", "closed_won")] {
            let v = transition_error(&default, from, to).expect("refused");
            assert!(v.description.contains("already closed"), "{v:?}");
        }
        let final_close = pipeline(MovementRules {
            allow_reopen: false,
            ..MovementRules::default()
        });
        let v = transition_error(&final_close, "closed_won", "negotiation").expect("refused");
        assert!(v.description.contains("reopening"), "{v:?}");
    }

    #[test]
    fn transition_and_criteria_violations_are_reported_together() {
        let p = default_compiled();
        let violations = p
            .check_move(&bare_lead("lead_generation"), &key("proposal"))
            .unwrap_err();
        assert_eq!(violations[0].kind, ViolationKind::Transition);
        assert_eq!(violations[0].subject, "lead_generation->proposal");
        assert_eq!(
            subjects(&violations[1..]),
            [
                "bant_budget",
                "bant_authority",
                "bant_need",
                "bant_timeline"
            ]
        );
        assert_eq!(ViolationKind::Transition.as_str(), "TRANSITION");
        assert_eq!(ViolationKind::StageCriterion.as_str(), "STAGE_CRITERION");
    }

    #[test]
    fn unknown_target_stages_are_one_transition_violation() {
        let p = default_compiled();
        let violations = p
            .check_move(&bare_lead("lead_generation"), &key("nowhere"))
            .unwrap_err();
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].kind, ViolationKind::Transition);
        assert_eq!(
            violations[0].description,
            "stage \"nowhere\" does not exist in pipeline \"default\""
        );
    }

    #[test]
    fn check_entry_only_checks_criteria() {
        let p = default_compiled();
        let lead = bare_lead("lead_generation");
        assert!(p.check_entry(&lead, &key("lead_generation")).is_empty());
        assert_eq!(
            subjects(&p.check_entry(&lead, &key("closed_won"))),
            ["amount_positive"]
        );
    }

    #[test]
    fn validation_reports_every_problem_with_its_path() {
        let mut def = default_pipeline();
        def.stages[0].kind = StageKind::Lost;
        def.stages[2].key = key("qualification");
        def.stages[1].probability = 1.5;
        def.stages[3].probability = f64::NAN;
        def.stages[2].display_name = "x".repeat(201);
        def.stages[2].entry_criteria[1].id = CriterionId::parse("bant_budget").unwrap();
        def.stages[2].entry_criteria[2].message = " ".into();
        def.stages[2].entry_criteria[3].expression = "lead.amout.value > 0.0".into();
        def.stages[5].entry_criteria[0].expression = "lead.lost_reason != ".into();
        def.stages.retain(|s| s.kind != StageKind::Won);

        let violations = compile(def).unwrap_err();
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "pipeline.stages",
                "pipeline.stages[0].kind",
                "pipeline.stages[1].probability",
                "pipeline.stages[2].key",
                "pipeline.stages[2].display_name",
                "pipeline.stages[2].entry_criteria[1].id",
                "pipeline.stages[2].entry_criteria[2].message",
                "pipeline.stages[2].entry_criteria[3].expression",
                "pipeline.stages[3].probability",
                "pipeline.stages[4].entry_criteria[0].expression",
            ],
            "{violations:#?}"
        );
        assert_eq!(
            violations[0].description,
            "at least one won stage is required"
        );
        assert_eq!(
            violations[3].description,
            "duplicate stage key \"qualification\""
        );
        assert!(
            violations[7].description.starts_with("line 1, column 5: "),
            "{}",
            violations[7].description
        );
        assert!(
            violations[9].description.starts_with("line 1, column "),
            "{}",
            violations[9].description
        );
    }

    #[test]
    fn stage_and_criteria_counts_are_bounded() {
        let mut def = default_pipeline();
        def.stages[1].entry_criteria = (0..21)
            .map(|i| criterion(&format!("c{i}"), "m", "true"))
            .collect();
        let filler = def.stages[1].clone();
        while def.stages.len() <= MAX_STAGES {
            let mut stage = filler.clone();
            stage.key = key(&format!("extra_{}", def.stages.len()));
            stage.entry_criteria.clear();
            def.stages.push(stage);
        }
        let violations = compile(def).unwrap_err();
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            ["pipeline.stages", "pipeline.stages[1].entry_criteria"]
        );
    }

    fn with_criteria(stage: usize, expressions: &[&str]) -> PipelineDefinition {
        let mut def = default_pipeline();
        def.stages[stage].entry_criteria = expressions
            .iter()
            .enumerate()
            .map(|(i, e)| criterion(&format!("c{i}"), "Costly", e))
            .collect();
        def
    }

    #[test]
    fn criteria_above_the_cost_limit_are_refused_naming_them() {
        let cube = criteria::cost::tests::cube();
        let mut def = with_criteria(1, &["true", &cube]);
        def.stages[1].entry_criteria[1].id = CriterionId::parse("cube").unwrap();
        let violations = compile(def).unwrap_err();
        assert_eq!(violations.len(), 1, "{violations:#?}");
        assert_eq!(
            violations[0].field,
            "pipeline.stages[1].entry_criteria[1].expression"
        );
        let description = &violations[0].description;
        assert!(
            description.starts_with("criterion \"cube\": its estimated cost is "),
            "{description}"
        );
        assert!(
            description.contains(&format!(
                "above the limit of {MAX_CRITERION_COST} per criterion"
            )),
            "{description}"
        );
    }

    #[test]
    fn a_stage_s_criteria_share_one_cost_limit() {
        let costly = criteria::cost::testing::costing_between(
            MAX_STAGE_COST / 3 + 1,
            MAX_CRITERION_COST - 10,
        );
        let def = with_criteria(1, &[&costly, "true", &costly, &costly, &costly]);
        let violations = compile(def).unwrap_err();
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        // The third costly criterion takes the sum over; the fourth too, as the limit holds
        // for what is left.
        assert_eq!(
            fields,
            [
                "pipeline.stages[1].entry_criteria[3].expression",
                "pipeline.stages[1].entry_criteria[4].expression"
            ],
            "{violations:#?}"
        );
        assert!(
            violations[0]
                .description
                .starts_with("criterion \"c3\": its estimated cost of "),
            "{}",
            violations[0].description
        );
        assert!(
            violations[0]
                .description
                .contains(&format!("above the limit of {MAX_STAGE_COST} per stage")),
            "{}",
            violations[0].description
        );
        // Two fit, in every stage of the pipeline: the limit is per stage (per move).
        let mut def = default_pipeline();
        for stage in &mut def.stages {
            stage.entry_criteria = (0..2)
                .map(|i| criterion(&format!("c{i}"), "Costly", &costly))
                .collect();
        }
        let p = compile(def).unwrap();
        for stage in &p.definition().stages {
            assert!(p.entry_cost(&stage.key) <= MAX_STAGE_COST);
        }
    }

    #[test]
    fn stored_criteria_above_the_limits_are_never_evaluated() {
        let cube = criteria::cost::tests::cube();
        let def = with_criteria(1, &["lead.title != \"\"", &cube]);
        assert!(compile(def.clone()).is_err());
        let p = compile_stored(def).expect("a stored pipeline loads");
        assert!(p.entry_cost(&key("qualification")) < 100);
        let lead = bare_lead("lead_generation");
        let violations = p.check_move(&lead, &key("qualification")).unwrap_err();
        assert_eq!(subjects(&violations), ["c1"]);
        assert!(
            violations[0]
                .description
                .starts_with("Costly (not evaluated: its estimated cost is "),
            "{}",
            violations[0].description
        );
        assert!(p.check_move(&lead, &key("closed_lost")).is_err());
        assert_eq!(
            subjects(&p.check_entry(&lead, &key("qualification"))),
            ["c1"]
        );
    }

    #[test]
    fn a_gate_can_skip_criteria() {
        let p = default_compiled();
        let lead = qualified_lead("qualification");
        let asked = std::sync::Mutex::new(Vec::new());
        let gate = |index: usize, expr: &CompiledExpression| {
            asked
                .lock()
                .unwrap()
                .push((index, expr.source().to_owned()));
            if index == 2 {
                Err("skipped".to_string())
            } else {
                Ok(())
            }
        };
        let violations = p
            .check_move_with(&lead, &key("proposal"), &gate)
            .unwrap_err();
        assert_eq!(subjects(&violations), ["bant_need"]);
        assert_eq!(
            violations[0].description,
            "BANT: the need is stated (skipped)"
        );
        assert_eq!(asked.lock().unwrap().len(), 4);
        assert_eq!(
            p.criterion_source(&key("proposal"), 2),
            Some("lead.bant.need != \"\"")
        );
        let unevaluated = p.unevaluated(&key("proposal"), 1, "why").unwrap();
        assert_eq!(unevaluated.subject, "bant_authority");
        assert!(p.unevaluated(&key("proposal"), 9, "why").is_none());
    }

    #[test]
    fn an_empty_pipeline_needs_open_and_won_stages() {
        let mut def = default_pipeline();
        def.stages.clear();
        let violations = compile(def).unwrap_err();
        let descriptions: Vec<&str> = violations.iter().map(|v| v.description.as_str()).collect();
        assert_eq!(
            descriptions,
            [
                "at least one open stage is required",
                "at least one won stage is required"
            ]
        );
    }
}
