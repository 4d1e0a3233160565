import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from leadpipe.v1 import lead_pb2 as _lead_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Period(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PERIOD_UNSPECIFIED: _ClassVar[Period]
    PERIOD_WEEK: _ClassVar[Period]
    PERIOD_MONTH: _ClassVar[Period]
    PERIOD_QUARTER: _ClassVar[Period]
PERIOD_UNSPECIFIED: Period
PERIOD_WEEK: Period
PERIOD_MONTH: Period
PERIOD_QUARTER: Period

class GetPipelineMetricsRequest(_message.Message):
    __slots__ = ("pipeline_id", "start_time", "end_time", "as_of")
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    pipeline_id: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    as_of: _timestamp_pb2.Timestamp
    def __init__(self, pipeline_id: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StageMetrics(_message.Message):
    __slots__ = ("stage", "open_count", "open_amount", "weighted_amount", "entered_count", "advanced_count", "lost_count", "conversion_rate", "win_rate", "median_time_in_stage", "p90_time_in_stage", "stuck_count", "learned_win_probability")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    OPEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    OPEN_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    WEIGHTED_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    ENTERED_COUNT_FIELD_NUMBER: _ClassVar[int]
    ADVANCED_COUNT_FIELD_NUMBER: _ClassVar[int]
    LOST_COUNT_FIELD_NUMBER: _ClassVar[int]
    CONVERSION_RATE_FIELD_NUMBER: _ClassVar[int]
    WIN_RATE_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_TIME_IN_STAGE_FIELD_NUMBER: _ClassVar[int]
    P90_TIME_IN_STAGE_FIELD_NUMBER: _ClassVar[int]
    STUCK_COUNT_FIELD_NUMBER: _ClassVar[int]
    LEARNED_WIN_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    stage: str
    open_count: int
    open_amount: _containers.RepeatedCompositeFieldContainer[_lead_pb2.Money]
    weighted_amount: _containers.RepeatedCompositeFieldContainer[_lead_pb2.Money]
    entered_count: int
    advanced_count: int
    lost_count: int
    conversion_rate: float
    win_rate: float
    median_time_in_stage: _duration_pb2.Duration
    p90_time_in_stage: _duration_pb2.Duration
    stuck_count: int
    learned_win_probability: float
    def __init__(self, stage: _Optional[str] = ..., open_count: _Optional[int] = ..., open_amount: _Optional[_Iterable[_Union[_lead_pb2.Money, _Mapping]]] = ..., weighted_amount: _Optional[_Iterable[_Union[_lead_pb2.Money, _Mapping]]] = ..., entered_count: _Optional[int] = ..., advanced_count: _Optional[int] = ..., lost_count: _Optional[int] = ..., conversion_rate: _Optional[float] = ..., win_rate: _Optional[float] = ..., median_time_in_stage: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., p90_time_in_stage: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., stuck_count: _Optional[int] = ..., learned_win_probability: _Optional[float] = ...) -> None: ...

class PipelineMetrics(_message.Message):
    __slots__ = ("pipeline_id", "start_time", "end_time", "as_of", "stages", "win_rate", "median_time_to_close", "average_won_amount", "sales_velocity", "bottleneck_stage", "bottleneck_explanation", "open_count")
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    WIN_RATE_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_TIME_TO_CLOSE_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_WON_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    SALES_VELOCITY_FIELD_NUMBER: _ClassVar[int]
    BOTTLENECK_STAGE_FIELD_NUMBER: _ClassVar[int]
    BOTTLENECK_EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    OPEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    pipeline_id: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    as_of: _timestamp_pb2.Timestamp
    stages: _containers.RepeatedCompositeFieldContainer[StageMetrics]
    win_rate: float
    median_time_to_close: _duration_pb2.Duration
    average_won_amount: _containers.RepeatedCompositeFieldContainer[_lead_pb2.Money]
    sales_velocity: _containers.RepeatedCompositeFieldContainer[_lead_pb2.Money]
    bottleneck_stage: str
    bottleneck_explanation: str
    open_count: int
    def __init__(self, pipeline_id: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stages: _Optional[_Iterable[_Union[StageMetrics, _Mapping]]] = ..., win_rate: _Optional[float] = ..., median_time_to_close: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., average_won_amount: _Optional[_Iterable[_Union[_lead_pb2.Money, _Mapping]]] = ..., sales_velocity: _Optional[_Iterable[_Union[_lead_pb2.Money, _Mapping]]] = ..., bottleneck_stage: _Optional[str] = ..., bottleneck_explanation: _Optional[str] = ..., open_count: _Optional[int] = ...) -> None: ...

class ListStuckLeadsRequest(_message.Message):
    __slots__ = ("pipeline_id", "page_size", "page_token")
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    pipeline_id: str
    page_size: int
    page_token: str
    def __init__(self, pipeline_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class StuckLead(_message.Message):
    __slots__ = ("lead", "time_in_stage", "threshold", "threshold_kind", "value_at_risk")
    LEAD_FIELD_NUMBER: _ClassVar[int]
    TIME_IN_STAGE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_KIND_FIELD_NUMBER: _ClassVar[int]
    VALUE_AT_RISK_FIELD_NUMBER: _ClassVar[int]
    lead: _lead_pb2.Lead
    time_in_stage: _duration_pb2.Duration
    threshold: _duration_pb2.Duration
    threshold_kind: str
    value_at_risk: _lead_pb2.Money
    def __init__(self, lead: _Optional[_Union[_lead_pb2.Lead, _Mapping]] = ..., time_in_stage: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., threshold: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., threshold_kind: _Optional[str] = ..., value_at_risk: _Optional[_Union[_lead_pb2.Money, _Mapping]] = ...) -> None: ...

class ListStuckLeadsResponse(_message.Message):
    __slots__ = ("stuck_leads", "next_page_token", "total_size")
    STUCK_LEADS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    stuck_leads: _containers.RepeatedCompositeFieldContainer[StuckLead]
    next_page_token: str
    total_size: int
    def __init__(self, stuck_leads: _Optional[_Iterable[_Union[StuckLead, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class ExplainWinProbabilityRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class WinProbabilityFactor(_message.Message):
    __slots__ = ("feature", "value", "log_odds", "support")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LOG_ODDS_FIELD_NUMBER: _ClassVar[int]
    SUPPORT_FIELD_NUMBER: _ClassVar[int]
    feature: str
    value: str
    log_odds: float
    support: int
    def __init__(self, feature: _Optional[str] = ..., value: _Optional[str] = ..., log_odds: _Optional[float] = ..., support: _Optional[int] = ...) -> None: ...

class WinProbabilityExplanation(_message.Message):
    __slots__ = ("lead_id", "win_probability", "stage_probability", "configured_probability", "factors", "training_size")
    LEAD_ID_FIELD_NUMBER: _ClassVar[int]
    WIN_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    STAGE_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    CONFIGURED_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    FACTORS_FIELD_NUMBER: _ClassVar[int]
    TRAINING_SIZE_FIELD_NUMBER: _ClassVar[int]
    lead_id: str
    win_probability: float
    stage_probability: float
    configured_probability: float
    factors: _containers.RepeatedCompositeFieldContainer[WinProbabilityFactor]
    training_size: int
    def __init__(self, lead_id: _Optional[str] = ..., win_probability: _Optional[float] = ..., stage_probability: _Optional[float] = ..., configured_probability: _Optional[float] = ..., factors: _Optional[_Iterable[_Union[WinProbabilityFactor, _Mapping]]] = ..., training_size: _Optional[int] = ...) -> None: ...

class GetForecastRequest(_message.Message):
    __slots__ = ("pipeline_id", "currency_code", "period", "horizon_periods", "as_of", "simulations", "seed")
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    HORIZON_PERIODS_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    SIMULATIONS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    pipeline_id: str
    currency_code: str
    period: Period
    horizon_periods: int
    as_of: _timestamp_pb2.Timestamp
    simulations: int
    seed: int
    def __init__(self, pipeline_id: _Optional[str] = ..., currency_code: _Optional[str] = ..., period: _Optional[_Union[Period, str]] = ..., horizon_periods: _Optional[int] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., simulations: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class PeriodForecast(_message.Message):
    __slots__ = ("start_time", "end_time", "closed_won_amount", "expected_amount", "p10_amount", "p50_amount", "p90_amount", "commit_amount", "best_case_amount", "pipeline_amount")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    CLOSED_WON_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    P10_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    P50_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    P90_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    COMMIT_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    BEST_CASE_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    closed_won_amount: _lead_pb2.Money
    expected_amount: _lead_pb2.Money
    p10_amount: _lead_pb2.Money
    p50_amount: _lead_pb2.Money
    p90_amount: _lead_pb2.Money
    commit_amount: _lead_pb2.Money
    best_case_amount: _lead_pb2.Money
    pipeline_amount: _lead_pb2.Money
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., closed_won_amount: _Optional[_Union[_lead_pb2.Money, _Mapping]] = ..., expected_amount: _Optional[_Union[_lead_pb2.Money, _Mapping]] = ..., p10_amount: _Optional[_Union[_lead_pb2.Money, _Mapping]] = ..., p50_amount: _Optional[_Union[_lead_pb2.Money, _Mapping]] = ..., p90_amount: _Optional[_Union[_lead_pb2.Money, _Mapping]] = ..., commit_amount: _Optional[_Union[_lead_pb2.Money, _Mapping]] = ..., best_case_amount: _Optional[_Union[_lead_pb2.Money, _Mapping]] = ..., pipeline_amount: _Optional[_Union[_lead_pb2.Money, _Mapping]] = ...) -> None: ...

class Forecast(_message.Message):
    __slots__ = ("pipeline_id", "currency_code", "as_of", "periods", "open_leads", "simulations")
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    PERIODS_FIELD_NUMBER: _ClassVar[int]
    OPEN_LEADS_FIELD_NUMBER: _ClassVar[int]
    SIMULATIONS_FIELD_NUMBER: _ClassVar[int]
    pipeline_id: str
    currency_code: str
    as_of: _timestamp_pb2.Timestamp
    periods: _containers.RepeatedCompositeFieldContainer[PeriodForecast]
    open_leads: int
    simulations: int
    def __init__(self, pipeline_id: _Optional[str] = ..., currency_code: _Optional[str] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., periods: _Optional[_Iterable[_Union[PeriodForecast, _Mapping]]] = ..., open_leads: _Optional[int] = ..., simulations: _Optional[int] = ...) -> None: ...

class BacktestForecastRequest(_message.Message):
    __slots__ = ("pipeline_id", "as_of", "horizon_periods", "period", "currency_code", "simulations", "seed")
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    HORIZON_PERIODS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    SIMULATIONS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    pipeline_id: str
    as_of: _timestamp_pb2.Timestamp
    horizon_periods: int
    period: Period
    currency_code: str
    simulations: int
    seed: int
    def __init__(self, pipeline_id: _Optional[str] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., horizon_periods: _Optional[int] = ..., period: _Optional[_Union[Period, str]] = ..., currency_code: _Optional[str] = ..., simulations: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class BacktestPeriod(_message.Message):
    __slots__ = ("start_time", "end_time", "actual_amount", "predicted_amount", "p10_amount", "p90_amount", "absolute_error", "percentage_error", "actual_within_p10_p90", "naive_predicted_amount", "naive_absolute_error", "naive_percentage_error")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    P10_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    P90_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    ABSOLUTE_ERROR_FIELD_NUMBER: _ClassVar[int]
    PERCENTAGE_ERROR_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_WITHIN_P10_P90_FIELD_NUMBER: _ClassVar[int]
    NAIVE_PREDICTED_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    NAIVE_ABSOLUTE_ERROR_FIELD_NUMBER: _ClassVar[int]
    NAIVE_PERCENTAGE_ERROR_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    actual_amount: _lead_pb2.Money
    predicted_amount: _lead_pb2.Money
    p10_amount: _lead_pb2.Money
    p90_amount: _lead_pb2.Money
    absolute_error: float
    percentage_error: float
    actual_within_p10_p90: bool
    naive_predicted_amount: _lead_pb2.Money
    naive_absolute_error: float
    naive_percentage_error: float
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actual_amount: _Optional[_Union[_lead_pb2.Money, _Mapping]] = ..., predicted_amount: _Optional[_Union[_lead_pb2.Money, _Mapping]] = ..., p10_amount: _Optional[_Union[_lead_pb2.Money, _Mapping]] = ..., p90_amount: _Optional[_Union[_lead_pb2.Money, _Mapping]] = ..., absolute_error: _Optional[float] = ..., percentage_error: _Optional[float] = ..., actual_within_p10_p90: _Optional[bool] = ..., naive_predicted_amount: _Optional[_Union[_lead_pb2.Money, _Mapping]] = ..., naive_absolute_error: _Optional[float] = ..., naive_percentage_error: _Optional[float] = ...) -> None: ...

class Backtest(_message.Message):
    __slots__ = ("pipeline_id", "as_of", "currency_code", "periods", "brier_score", "naive_brier_score", "scored_leads")
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    PERIODS_FIELD_NUMBER: _ClassVar[int]
    BRIER_SCORE_FIELD_NUMBER: _ClassVar[int]
    NAIVE_BRIER_SCORE_FIELD_NUMBER: _ClassVar[int]
    SCORED_LEADS_FIELD_NUMBER: _ClassVar[int]
    pipeline_id: str
    as_of: _timestamp_pb2.Timestamp
    currency_code: str
    periods: _containers.RepeatedCompositeFieldContainer[BacktestPeriod]
    brier_score: float
    naive_brier_score: float
    scored_leads: int
    def __init__(self, pipeline_id: _Optional[str] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., currency_code: _Optional[str] = ..., periods: _Optional[_Iterable[_Union[BacktestPeriod, _Mapping]]] = ..., brier_score: _Optional[float] = ..., naive_brier_score: _Optional[float] = ..., scored_leads: _Optional[int] = ...) -> None: ...
