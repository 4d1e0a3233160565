//! SeaORM entities, one module per table. See `migrations/` for the schema.

pub mod lead {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "leads")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub title: String,
        pub company: String,
        pub contact_name: String,
        pub contact_email: String,
        pub owner: String,
        pub source: String,
        pub pipeline_id: String,
        pub stage: String,
        pub amount_currency: String,
        pub amount_units: i64,
        pub amount_nanos: i32,
        pub budget_currency: String,
        pub budget_units: i64,
        pub budget_nanos: i32,
        pub bant_authority: String,
        pub bant_need: String,
        pub bant_timeline: Option<i64>,
        pub expected_close_time: Option<i64>,
        pub labels: String,
        pub lost_reason: String,
        pub win_probability: f64,
        /// win_probability × amount in major units, for priority ordering.
        pub expected_value: f64,
        pub create_time: i64,
        pub update_time: i64,
        pub stage_enter_time: i64,
        pub close_time: Option<i64>,
        pub version: i64,
        /// The lead's id in the system it was imported from.
        pub external_id: Option<String>,
        /// Times the expected close moved to a later date.
        pub close_date_push_count: i64,
        pub first_expected_close_time: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod lead_label {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "lead_labels")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub lead_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub value: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod pipeline {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "pipelines")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub display_name: String,
        /// The `PipelineDefinition` as JSON.
        pub definition: String,
        pub version: i64,
        pub create_time: i64,
        pub update_time: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod stage_change {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "stage_changes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub sequence: i64,
        pub lead_id: String,
        pub pipeline_id: String,
        pub from_stage: String,
        pub to_stage: String,
        pub change_time: i64,
        pub actor: String,
        pub note: String,
        pub imported: bool,
        /// The lead's amount as the change left it (currency empty without one), so that what
        /// a stage was entered with is read from the change alone; NULL on changes recorded
        /// before the service kept it, whose amount is in the lead's revisions.
        pub amount_currency: Option<String>,
        pub amount_units: Option<i64>,
        pub amount_nanos: Option<i32>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod lead_revision {
    use sea_orm::entity::prelude::*;

    /// The lead after each write; see `store::revisions`.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "lead_revisions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub lead_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub revision: i64,
        pub change_time: i64,
        /// `created`, `updated`, `moved` or `deleted`.
        pub kind: String,
        pub actor: String,
        /// The outbox sequence of the write's event; None for history that was not streamed.
        pub sequence: Option<i64>,
        /// Comma-separated `Lead` field paths.
        pub changed_fields: String,
        pub from_stage: Option<String>,
        pub to_stage: Option<String>,
        pub pipeline_id: String,
        pub stage: String,
        pub owner: String,
        pub source: String,
        pub amount_currency: String,
        pub amount_units: i64,
        pub amount_nanos: i32,
        pub expected_close_time: Option<i64>,
        pub close_time: Option<i64>,
        pub create_time: i64,
        pub labels: String,
        pub close_date_push_count: i64,
        pub first_expected_close_time: Option<i64>,
        pub deleted: bool,
        /// The whole `domain::Lead` as JSON.
        pub lead: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod outbox {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub sequence: i64,
        pub lead_id: String,
        pub pipeline_id: String,
        pub to_stage: String,
        pub owner: String,
        pub change_time: i64,
        /// The `LeadChangeEvent` as JSON (`StageChangeEvent`, its stage-only subset, in rows
        /// written before every write had an event).
        pub payload: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod idempotency_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "idempotency_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub request_id: String,
        pub method: String,
        pub request_hash: String,
        /// The response as JSON; empty while the first call's transaction is still open.
        pub response: String,
        pub create_time: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod tenant_sequence {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenant_sequences")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        pub last_sequence: i64,
        /// Outbox events up to this sequence were removed by retention.
        pub pruned_through: i64,
        /// Lead revisions older than this (µs since the epoch) were removed by retention.
        pub revisions_pruned_before: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod api_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// `reader`, `writer` or `admin`.
        pub role: String,
        /// Lower-case hex SHA-256 of the whole key. The key itself is never stored.
        pub secret_hash: String,
        pub label: String,
        pub create_time: i64,
        pub revoke_time: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
