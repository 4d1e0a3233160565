import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Money(_message.Message):
    __slots__ = ("currency_code", "units", "nanos")
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    NANOS_FIELD_NUMBER: _ClassVar[int]
    currency_code: str
    units: int
    nanos: int
    def __init__(self, currency_code: _Optional[str] = ..., units: _Optional[int] = ..., nanos: _Optional[int] = ...) -> None: ...

class Bant(_message.Message):
    __slots__ = ("budget", "authority", "need", "timeline")
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    NEED_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_FIELD_NUMBER: _ClassVar[int]
    budget: Money
    authority: str
    need: str
    timeline: _timestamp_pb2.Timestamp
    def __init__(self, budget: _Optional[_Union[Money, _Mapping]] = ..., authority: _Optional[str] = ..., need: _Optional[str] = ..., timeline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Lead(_message.Message):
    __slots__ = ("id", "title", "company", "contact_name", "contact_email", "owner", "source", "pipeline_id", "stage", "amount", "bant", "expected_close_time", "labels", "lost_reason", "win_probability", "create_time", "update_time", "stage_enter_time", "close_time", "etag", "external_id")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    COMPANY_FIELD_NUMBER: _ClassVar[int]
    CONTACT_NAME_FIELD_NUMBER: _ClassVar[int]
    CONTACT_EMAIL_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    BANT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CLOSE_TIME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LOST_REASON_FIELD_NUMBER: _ClassVar[int]
    WIN_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    STAGE_ENTER_TIME_FIELD_NUMBER: _ClassVar[int]
    CLOSE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    title: str
    company: str
    contact_name: str
    contact_email: str
    owner: str
    source: str
    pipeline_id: str
    stage: str
    amount: Money
    bant: Bant
    expected_close_time: _timestamp_pb2.Timestamp
    labels: _containers.ScalarMap[str, str]
    lost_reason: str
    win_probability: float
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    stage_enter_time: _timestamp_pb2.Timestamp
    close_time: _timestamp_pb2.Timestamp
    etag: str
    external_id: str
    def __init__(self, id: _Optional[str] = ..., title: _Optional[str] = ..., company: _Optional[str] = ..., contact_name: _Optional[str] = ..., contact_email: _Optional[str] = ..., owner: _Optional[str] = ..., source: _Optional[str] = ..., pipeline_id: _Optional[str] = ..., stage: _Optional[str] = ..., amount: _Optional[_Union[Money, _Mapping]] = ..., bant: _Optional[_Union[Bant, _Mapping]] = ..., expected_close_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., lost_reason: _Optional[str] = ..., win_probability: _Optional[float] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stage_enter_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., close_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ..., external_id: _Optional[str] = ...) -> None: ...

class StageChange(_message.Message):
    __slots__ = ("sequence", "lead_id", "pipeline_id", "from_stage", "to_stage", "change_time", "actor", "note", "imported")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LEAD_ID_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_STAGE_FIELD_NUMBER: _ClassVar[int]
    TO_STAGE_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    IMPORTED_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    lead_id: str
    pipeline_id: str
    from_stage: str
    to_stage: str
    change_time: _timestamp_pb2.Timestamp
    actor: str
    note: str
    imported: bool
    def __init__(self, sequence: _Optional[int] = ..., lead_id: _Optional[str] = ..., pipeline_id: _Optional[str] = ..., from_stage: _Optional[str] = ..., to_stage: _Optional[str] = ..., change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., note: _Optional[str] = ..., imported: _Optional[bool] = ...) -> None: ...
