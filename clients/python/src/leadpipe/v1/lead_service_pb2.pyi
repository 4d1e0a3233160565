import datetime

from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from leadpipe.v1 import lead_pb2 as _lead_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateLeadRequest(_message.Message):
    __slots__ = ("lead", "request_id")
    LEAD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    lead: _lead_pb2.Lead
    request_id: str
    def __init__(self, lead: _Optional[_Union[_lead_pb2.Lead, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ImportLeadsRequest(_message.Message):
    __slots__ = ("external_id", "lead", "history", "revisions", "update_existing")
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    LEAD_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    REVISIONS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_EXISTING_FIELD_NUMBER: _ClassVar[int]
    external_id: str
    lead: _lead_pb2.Lead
    history: _containers.RepeatedCompositeFieldContainer[ImportedStageChange]
    revisions: _containers.RepeatedCompositeFieldContainer[ImportedRevision]
    update_existing: bool
    def __init__(self, external_id: _Optional[str] = ..., lead: _Optional[_Union[_lead_pb2.Lead, _Mapping]] = ..., history: _Optional[_Iterable[_Union[ImportedStageChange, _Mapping]]] = ..., revisions: _Optional[_Iterable[_Union[ImportedRevision, _Mapping]]] = ..., update_existing: _Optional[bool] = ...) -> None: ...

class ImportedRevision(_message.Message):
    __slots__ = ("change_time", "lead", "update_mask", "actor")
    CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    LEAD_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    change_time: _timestamp_pb2.Timestamp
    lead: _lead_pb2.Lead
    update_mask: _field_mask_pb2.FieldMask
    actor: str
    def __init__(self, change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lead: _Optional[_Union[_lead_pb2.Lead, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., actor: _Optional[str] = ...) -> None: ...

class ImportedStageChange(_message.Message):
    __slots__ = ("from_stage", "to_stage", "change_time", "actor", "note")
    FROM_STAGE_FIELD_NUMBER: _ClassVar[int]
    TO_STAGE_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    from_stage: str
    to_stage: str
    change_time: _timestamp_pb2.Timestamp
    actor: str
    note: str
    def __init__(self, from_stage: _Optional[str] = ..., to_stage: _Optional[str] = ..., change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class ImportError(_message.Message):
    __slots__ = ("index", "external_id", "field", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    external_id: str
    field: str
    reason: str
    def __init__(self, index: _Optional[int] = ..., external_id: _Optional[str] = ..., field: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ImportLeadsResponse(_message.Message):
    __slots__ = ("received", "imported", "already_imported", "failed", "errors", "updated", "differing")
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    IMPORTED_FIELD_NUMBER: _ClassVar[int]
    ALREADY_IMPORTED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    DIFFERING_FIELD_NUMBER: _ClassVar[int]
    received: int
    imported: int
    already_imported: int
    failed: int
    errors: _containers.RepeatedCompositeFieldContainer[ImportError]
    updated: int
    differing: int
    def __init__(self, received: _Optional[int] = ..., imported: _Optional[int] = ..., already_imported: _Optional[int] = ..., failed: _Optional[int] = ..., errors: _Optional[_Iterable[_Union[ImportError, _Mapping]]] = ..., updated: _Optional[int] = ..., differing: _Optional[int] = ...) -> None: ...

class GetLeadRequest(_message.Message):
    __slots__ = ("id", "as_of")
    ID_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    id: str
    as_of: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListLeadsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "filter", "order_by", "as_of")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    filter: str
    order_by: str
    as_of: _timestamp_pb2.Timestamp
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ..., order_by: _Optional[str] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListLeadsResponse(_message.Message):
    __slots__ = ("leads", "next_page_token", "total_size")
    LEADS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    leads: _containers.RepeatedCompositeFieldContainer[_lead_pb2.Lead]
    next_page_token: str
    total_size: int
    def __init__(self, leads: _Optional[_Iterable[_Union[_lead_pb2.Lead, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class UpdateLeadRequest(_message.Message):
    __slots__ = ("lead", "update_mask")
    LEAD_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    lead: _lead_pb2.Lead
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, lead: _Optional[_Union[_lead_pb2.Lead, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class DeleteLeadRequest(_message.Message):
    __slots__ = ("id", "etag")
    ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    id: str
    etag: str
    def __init__(self, id: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class MoveLeadRequest(_message.Message):
    __slots__ = ("id", "stage", "etag", "request_id", "note")
    ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    id: str
    stage: str
    etag: str
    request_id: str
    note: str
    def __init__(self, id: _Optional[str] = ..., stage: _Optional[str] = ..., etag: _Optional[str] = ..., request_id: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class CheckMoveRequest(_message.Message):
    __slots__ = ("id", "stage")
    ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    stage: str
    def __init__(self, id: _Optional[str] = ..., stage: _Optional[str] = ...) -> None: ...

class MoveViolation(_message.Message):
    __slots__ = ("type", "subject", "description")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    type: str
    subject: str
    description: str
    def __init__(self, type: _Optional[str] = ..., subject: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class CheckMoveResponse(_message.Message):
    __slots__ = ("allowed", "violations")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    violations: _containers.RepeatedCompositeFieldContainer[MoveViolation]
    def __init__(self, allowed: _Optional[bool] = ..., violations: _Optional[_Iterable[_Union[MoveViolation, _Mapping]]] = ...) -> None: ...

class ListStageChangesRequest(_message.Message):
    __slots__ = ("lead_id", "page_size", "page_token")
    LEAD_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    lead_id: str
    page_size: int
    page_token: str
    def __init__(self, lead_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListStageChangesResponse(_message.Message):
    __slots__ = ("stage_changes", "next_page_token")
    STAGE_CHANGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    stage_changes: _containers.RepeatedCompositeFieldContainer[_lead_pb2.StageChange]
    next_page_token: str
    def __init__(self, stage_changes: _Optional[_Iterable[_Union[_lead_pb2.StageChange, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListLeadRevisionsRequest(_message.Message):
    __slots__ = ("lead_id", "page_size", "page_token")
    LEAD_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    lead_id: str
    page_size: int
    page_token: str
    def __init__(self, lead_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListLeadRevisionsResponse(_message.Message):
    __slots__ = ("revisions", "next_page_token")
    REVISIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    revisions: _containers.RepeatedCompositeFieldContainer[_lead_pb2.LeadRevision]
    next_page_token: str
    def __init__(self, revisions: _Optional[_Iterable[_Union[_lead_pb2.LeadRevision, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchStageChangesRequest(_message.Message):
    __slots__ = ("after_sequence", "pipeline_id", "stages", "owner", "lead_id")
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    LEAD_ID_FIELD_NUMBER: _ClassVar[int]
    after_sequence: int
    pipeline_id: str
    stages: _containers.RepeatedScalarFieldContainer[str]
    owner: str
    lead_id: str
    def __init__(self, after_sequence: _Optional[int] = ..., pipeline_id: _Optional[str] = ..., stages: _Optional[_Iterable[str]] = ..., owner: _Optional[str] = ..., lead_id: _Optional[str] = ...) -> None: ...

class WatchLeadChangesRequest(_message.Message):
    __slots__ = ("after_sequence", "pipeline_id", "owner", "lead_id", "changed_fields")
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    LEAD_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    after_sequence: int
    pipeline_id: str
    owner: str
    lead_id: str
    changed_fields: _field_mask_pb2.FieldMask
    def __init__(self, after_sequence: _Optional[int] = ..., pipeline_id: _Optional[str] = ..., owner: _Optional[str] = ..., lead_id: _Optional[str] = ..., changed_fields: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class LeadChangeEvent(_message.Message):
    __slots__ = ("sequence", "kind", "lead", "previous_lead", "changed_fields", "actor", "change_time")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LEAD_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_LEAD_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    kind: _lead_pb2.LeadRevisionKind
    lead: _lead_pb2.Lead
    previous_lead: _lead_pb2.Lead
    changed_fields: _field_mask_pb2.FieldMask
    actor: str
    change_time: _timestamp_pb2.Timestamp
    def __init__(self, sequence: _Optional[int] = ..., kind: _Optional[_Union[_lead_pb2.LeadRevisionKind, str]] = ..., lead: _Optional[_Union[_lead_pb2.Lead, _Mapping]] = ..., previous_lead: _Optional[_Union[_lead_pb2.Lead, _Mapping]] = ..., changed_fields: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., actor: _Optional[str] = ..., change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StageChangeEvent(_message.Message):
    __slots__ = ("sequence", "lead_id", "pipeline_id", "from_stage", "to_stage", "change_time", "actor", "note", "lead")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LEAD_ID_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_STAGE_FIELD_NUMBER: _ClassVar[int]
    TO_STAGE_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    LEAD_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    lead_id: str
    pipeline_id: str
    from_stage: str
    to_stage: str
    change_time: _timestamp_pb2.Timestamp
    actor: str
    note: str
    lead: _lead_pb2.Lead
    def __init__(self, sequence: _Optional[int] = ..., lead_id: _Optional[str] = ..., pipeline_id: _Optional[str] = ..., from_stage: _Optional[str] = ..., to_stage: _Optional[str] = ..., change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., note: _Optional[str] = ..., lead: _Optional[_Union[_lead_pb2.Lead, _Mapping]] = ...) -> None: ...
