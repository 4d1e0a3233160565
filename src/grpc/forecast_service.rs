//! `leadpipe.v1.ForecastService`: each call converts its request into a query, runs one use
//! case and converts the report back (`crate::api`).

use tonic::{Request, Response, Status};

use super::{context, pb};
use crate::app::forecast::ForecastService;
use crate::app::forecast::metrics::{MetricsQuery, StuckLeadsQuery};
use crate::app::forecast::projection::ForecastQuery;
use crate::domain::ids::LeadId;

pub struct ForecastApi {
    pub forecasts: ForecastService,
}

#[tonic::async_trait]
impl pb::forecast_service_server::ForecastService for ForecastApi {
    async fn get_pipeline_metrics(
        &self,
        request: Request<pb::GetPipelineMetricsRequest>,
    ) -> Result<Response<pb::PipelineMetrics>, Status> {
        let ctx = context(&request);
        let query = MetricsQuery::try_from(request.into_inner())?;
        let report = self.forecasts.metrics(&ctx, query).await?;
        Ok(Response::new(report.try_into()?))
    }

    async fn list_stuck_leads(
        &self,
        request: Request<pb::ListStuckLeadsRequest>,
    ) -> Result<Response<pb::ListStuckLeadsResponse>, Status> {
        let ctx = context(&request);
        let query = StuckLeadsQuery::try_from(request.into_inner())?;
        let page = self.forecasts.stuck_leads(&ctx, query).await?;
        Ok(Response::new(page.try_into()?))
    }

    async fn explain_win_probability(
        &self,
        request: Request<pb::ExplainWinProbabilityRequest>,
    ) -> Result<Response<pb::WinProbabilityExplanation>, Status> {
        let ctx = context(&request);
        let id = LeadId::try_from(request.into_inner())?;
        let explanation = self.forecasts.explain(&ctx, &id).await?;
        Ok(Response::new(explanation.into()))
    }

    async fn get_forecast(
        &self,
        request: Request<pb::GetForecastRequest>,
    ) -> Result<Response<pb::Forecast>, Status> {
        let ctx = context(&request);
        let query = ForecastQuery::try_from(request.into_inner())?;
        let report = self.forecasts.forecast(&ctx, query).await?;
        Ok(Response::new(report.try_into()?))
    }

    async fn backtest_forecast(
        &self,
        request: Request<pb::BacktestForecastRequest>,
    ) -> Result<Response<pb::Backtest>, Status> {
        let ctx = context(&request);
        let query = ForecastQuery::try_from(request.into_inner())?;
        let report = self.forecasts.backtest(&ctx, query).await?;
        Ok(Response::new(report.try_into()?))
    }
}
