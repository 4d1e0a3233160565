//! `leadpipe.v1.PipelineService`.

use tonic::{Request, Response, Status};

use super::{context, pb};
use crate::app::pipelines::{CreatePipeline, PipelineListQuery, PipelineService, UpdatePipeline};
use crate::domain::ids::PipelineId;

pub struct PipelineApi {
    pub pipelines: PipelineService,
}

#[tonic::async_trait]
impl pb::pipeline_service_server::PipelineService for PipelineApi {
    async fn create_pipeline(
        &self,
        request: Request<pb::CreatePipelineRequest>,
    ) -> Result<Response<pb::Pipeline>, Status> {
        let ctx = context(&request);
        let command = CreatePipeline::try_from(request.into_inner())?;
        let created = self.pipelines.create(&ctx, command).await?;
        Ok(Response::new((&created).into()))
    }

    async fn get_pipeline(
        &self,
        request: Request<pb::GetPipelineRequest>,
    ) -> Result<Response<pb::Pipeline>, Status> {
        let ctx = context(&request);
        let id = PipelineId::try_from(request.into_inner())?;
        let pipeline = self.pipelines.get(&ctx, &id).await?;
        Ok(Response::new((&pipeline).into()))
    }

    async fn list_pipelines(
        &self,
        request: Request<pb::ListPipelinesRequest>,
    ) -> Result<Response<pb::ListPipelinesResponse>, Status> {
        let ctx = context(&request);
        let query = PipelineListQuery::try_from(request.into_inner())?;
        let page = self.pipelines.list(&ctx, query).await?;
        Ok(Response::new(page.into()))
    }

    async fn update_pipeline(
        &self,
        request: Request<pb::UpdatePipelineRequest>,
    ) -> Result<Response<pb::Pipeline>, Status> {
        let ctx = context(&request);
        let command = UpdatePipeline::try_from(request.into_inner())?;
        let updated = self.pipelines.update(&ctx, command).await?;
        Ok(Response::new((&updated).into()))
    }
}
