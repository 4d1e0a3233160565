import datetime

from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StageKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_KIND_UNSPECIFIED: _ClassVar[StageKind]
    STAGE_KIND_OPEN: _ClassVar[StageKind]
    STAGE_KIND_WON: _ClassVar[StageKind]
    STAGE_KIND_LOST: _ClassVar[StageKind]
STAGE_KIND_UNSPECIFIED: StageKind
STAGE_KIND_OPEN: StageKind
STAGE_KIND_WON: StageKind
STAGE_KIND_LOST: StageKind

class Criterion(_message.Message):
    __slots__ = ("id", "message", "expression")
    ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    message: str
    expression: str
    def __init__(self, id: _Optional[str] = ..., message: _Optional[str] = ..., expression: _Optional[str] = ...) -> None: ...

class Stage(_message.Message):
    __slots__ = ("key", "display_name", "kind", "probability", "rotting_days", "entry_criteria")
    KEY_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    ROTTING_DAYS_FIELD_NUMBER: _ClassVar[int]
    ENTRY_CRITERIA_FIELD_NUMBER: _ClassVar[int]
    key: str
    display_name: str
    kind: StageKind
    probability: float
    rotting_days: int
    entry_criteria: _containers.RepeatedCompositeFieldContainer[Criterion]
    def __init__(self, key: _Optional[str] = ..., display_name: _Optional[str] = ..., kind: _Optional[_Union[StageKind, str]] = ..., probability: _Optional[float] = ..., rotting_days: _Optional[int] = ..., entry_criteria: _Optional[_Iterable[_Union[Criterion, _Mapping]]] = ...) -> None: ...

class Pipeline(_message.Message):
    __slots__ = ("id", "display_name", "stages", "allow_skip", "create_time", "update_time", "etag", "allow_backward", "allow_reopen")
    ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    ALLOW_SKIP_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    ALLOW_BACKWARD_FIELD_NUMBER: _ClassVar[int]
    ALLOW_REOPEN_FIELD_NUMBER: _ClassVar[int]
    id: str
    display_name: str
    stages: _containers.RepeatedCompositeFieldContainer[Stage]
    allow_skip: bool
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    allow_backward: bool
    allow_reopen: bool
    def __init__(self, id: _Optional[str] = ..., display_name: _Optional[str] = ..., stages: _Optional[_Iterable[_Union[Stage, _Mapping]]] = ..., allow_skip: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ..., allow_backward: _Optional[bool] = ..., allow_reopen: _Optional[bool] = ...) -> None: ...

class CreatePipelineRequest(_message.Message):
    __slots__ = ("pipeline",)
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    pipeline: Pipeline
    def __init__(self, pipeline: _Optional[_Union[Pipeline, _Mapping]] = ...) -> None: ...

class GetPipelineRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListPipelinesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPipelinesResponse(_message.Message):
    __slots__ = ("pipelines", "next_page_token")
    PIPELINES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    pipelines: _containers.RepeatedCompositeFieldContainer[Pipeline]
    next_page_token: str
    def __init__(self, pipelines: _Optional[_Iterable[_Union[Pipeline, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdatePipelineRequest(_message.Message):
    __slots__ = ("pipeline", "update_mask")
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    pipeline: Pipeline
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, pipeline: _Optional[_Union[Pipeline, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...
