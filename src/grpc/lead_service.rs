//! `leadpipe.v1.LeadService`.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{context, pb};
use crate::api::convert::stage_change_event;
use crate::app::api_keys::KeyName;
use crate::app::events::EventFilter;
use crate::app::forecast::ForecastService;
use crate::app::import::{ImportRow, ImportService};
use crate::app::leads::{
    CheckMove, CreateLead, DeleteLead, GetLead, LeadListQuery, LeadPageQuery, LeadService,
    MoveCommand, UpdateLead,
};

pub struct LeadApi {
    pub leads: LeadService,
    pub import: ImportService,
    /// Imports retrain the learned model and rescore open leads before they return.
    pub forecasts: ForecastService,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::StageChangeEvent, Status>> + Send>>;
type LeadEventStream = Pin<Box<dyn Stream<Item = Result<pb::LeadChangeEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::lead_service_server::LeadService for LeadApi {
    type WatchStageChangesStream = EventStream;
    type WatchLeadChangesStream = LeadEventStream;

    async fn import_leads(
        &self,
        request: Request<tonic::Streaming<pb::ImportLeadsRequest>>,
    ) -> Result<Response<pb::ImportLeadsResponse>, Status> {
        let ctx = context(&request);
        let rows = import_rows(request.into_inner());
        let summary = self
            .import
            .import_and_rescore(&self.forecasts, &ctx, rows)
            .await?;
        Ok(Response::new(summary.into()))
    }

    async fn watch_stage_changes(
        &self,
        request: Request<pb::WatchStageChangesRequest>,
    ) -> Result<Response<Self::WatchStageChangesStream>, Status> {
        let ctx = context(&request);
        let key = request.extensions().get::<KeyName>().cloned();
        let filter = EventFilter::try_from(request.get_ref())?;
        let after_sequence = request.get_ref().after_sequence;
        let events = self
            .leads
            .events()
            .subscribe(&ctx, key, after_sequence, filter)
            .await?;
        // The filter passes only events that carry a stage change.
        let stream =
            tokio_stream::wrappers::ReceiverStream::new(events).filter_map(|item| async move {
                match item {
                    Ok(event) => stage_change_event(&event).map(Ok),
                    Err(error) => Some(Err(Status::from(*error))),
                }
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn watch_lead_changes(
        &self,
        request: Request<pb::WatchLeadChangesRequest>,
    ) -> Result<Response<Self::WatchLeadChangesStream>, Status> {
        let ctx = context(&request);
        let key = request.extensions().get::<KeyName>().cloned();
        let filter = EventFilter::try_from(request.get_ref())?;
        let after_sequence = request.get_ref().after_sequence;
        let events = self
            .leads
            .events()
            .subscribe(&ctx, key, after_sequence, filter)
            .await?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(events).map(|item| {
            item.map(|event| pb::LeadChangeEvent::from(event.as_ref()))
                .map_err(|error| Status::from(*error))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn create_lead(
        &self,
        request: Request<pb::CreateLeadRequest>,
    ) -> Result<Response<pb::Lead>, Status> {
        let ctx = context(&request);
        let command = CreateLead::try_from(request.into_inner())?;
        let created = self.leads.create(&ctx, command).await?;
        Ok(Response::new((&created).into()))
    }

    async fn get_lead(
        &self,
        request: Request<pb::GetLeadRequest>,
    ) -> Result<Response<pb::Lead>, Status> {
        let ctx = context(&request);
        let query = GetLead::try_from(request.into_inner())?;
        let lead = self.leads.read(&ctx, query).await?;
        Ok(Response::new((&lead).into()))
    }

    async fn list_leads(
        &self,
        request: Request<pb::ListLeadsRequest>,
    ) -> Result<Response<pb::ListLeadsResponse>, Status> {
        let ctx = context(&request);
        let query = LeadListQuery::try_from(request.into_inner())?;
        let page = self.leads.list(&ctx, query).await?;
        Ok(Response::new(page.into()))
    }

    async fn update_lead(
        &self,
        request: Request<pb::UpdateLeadRequest>,
    ) -> Result<Response<pb::Lead>, Status> {
        let ctx = context(&request);
        let command = UpdateLead::try_from(request.into_inner())?;
        let updated = self.leads.update(&ctx, command).await?;
        Ok(Response::new((&updated).into()))
    }

    async fn delete_lead(
        &self,
        request: Request<pb::DeleteLeadRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = context(&request);
        let command = DeleteLead::try_from(request.into_inner())?;
        self.leads.delete(&ctx, command).await?;
        Ok(Response::new(()))
    }

    async fn move_lead(
        &self,
        request: Request<pb::MoveLeadRequest>,
    ) -> Result<Response<pb::Lead>, Status> {
        let ctx = context(&request);
        let command = MoveCommand::try_from(request.into_inner())?;
        let moved = self.leads.move_lead(&ctx, command).await?;
        Ok(Response::new((&moved).into()))
    }

    async fn check_move(
        &self,
        request: Request<pb::CheckMoveRequest>,
    ) -> Result<Response<pb::CheckMoveResponse>, Status> {
        let ctx = context(&request);
        let command = CheckMove::try_from(request.into_inner())?;
        let refusals = self.leads.check_move(&ctx, command).await?;
        Ok(Response::new(refusals.into()))
    }

    async fn list_stage_changes(
        &self,
        request: Request<pb::ListStageChangesRequest>,
    ) -> Result<Response<pb::ListStageChangesResponse>, Status> {
        let ctx = context(&request);
        let query = LeadPageQuery::try_from(request.into_inner())?;
        let page = self.leads.list_stage_changes(&ctx, query).await?;
        Ok(Response::new(page.into()))
    }

    async fn list_lead_revisions(
        &self,
        request: Request<pb::ListLeadRevisionsRequest>,
    ) -> Result<Response<pb::ListLeadRevisionsResponse>, Status> {
        let ctx = context(&request);
        let query = LeadPageQuery::try_from(request.into_inner())?;
        let page = self.leads.list_revisions(&ctx, query).await?;
        Ok(Response::new(page.into()))
    }
}

/// The messages of an import stream as rows. A message that cannot be decoded is the client's
/// fault, not an internal error.
fn import_rows(
    stream: impl Stream<Item = Result<pb::ImportLeadsRequest, Status>> + Unpin,
) -> impl Stream<Item = Result<ImportRow, Status>> + Unpin {
    stream.enumerate().map(|(index, message)| {
        message
            .map(ImportRow::from)
            .map_err(|status| match status.code() {
                tonic::Code::Internal => super::error::undecodable_stream_message(index, &status),
                _ => status,
            })
    })
}
