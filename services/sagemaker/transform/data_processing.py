"""Scoring one mini-batch with DataProcessing: input filter, one model call, join, output filter.

`process_batch` is what a worker calls per mini-batch (contract §4.2-4.3): it filters each
record with InputFilter, sends the mini-batch to the model as one request, and, when a join, an
OutputFilter or AssembleWith `Line` needs it, splits the answer into one output per record,
joins each with its original input record, filters the result, and returns the bytes to append
to the shard's output.

Record formats: `text/csv` lines are arrays of their fields, kept as the exact text between
the commas (numbers are never reformatted); `application/json` and JSON Lines
(`application/jsonlines`) records are JSON values. A join writes the input's format: CSV input
fields followed by the prediction's fields; JSON adds `SageMakerOutput` to an object input, or
wraps any other input as `{"SageMakerInput": ..., "SageMakerOutput": ...}`.

Without a join or filters, the mini-batch's records go to the model as one body, and the answer
is appended as it came (AssembleWith `None`) or checked to hold one line per record
(`Line`): no per-record work on the hot path.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from services.sagemaker.serving.codecs import CSV, JSON, parse_media_type
from services.sagemaker.transform.errors import (
    InvalidDataProcessing,
    OutputCountMismatch,
    RecordProcessingError,
)
from services.sagemaker.transform.jsonpath import JsonPath, parse_json_path
from services.sagemaker.transform.records import MiniBatch, SplitType

AssembleWith = Literal["None", "Line"]
JoinSource = Literal["None", "Input"]
RecordFormat = Literal["csv", "json", "other"]
HandlerInvoke = Callable[[bytes, str, str], tuple[bytes, str]]

# Media types whose records are one JSON value a line. SageMaker's own name comes first.
JSON_LINES_TYPES = frozenset(
    ("application/jsonlines", "application/x-jsonlines", "application/json-lines")
)

_NOT_JSON = object()


@dataclass(frozen=True, slots=True)
class _Plan:
    """What DataProcessing settings mean for every mini-batch, worked out once."""

    input_format: RecordFormat
    input_filter: JsonPath | None
    output_filter: JsonPath | None
    join: bool
    split_type: SplitType
    assemble_with: AssembleWith

    @property
    def needs_outputs_per_record(self) -> bool:
        return self.join or self.output_filter is not None or self.assemble_with == "Line"


def record_format(content_type: str) -> RecordFormat:
    """Tell how records of a media type are read for filters and joins.

    Args:
        content_type: A Content-Type or Accept value; parameters are ignored.

    Returns:
        `"csv"` for `text/csv`, `"json"` for JSON and JSON Lines types, `"other"` otherwise.
    """
    media = parse_media_type(content_type)
    if media == CSV:
        return "csv"
    if media == JSON or media in JSON_LINES_TYPES or media.endswith("+json"):
        return "json"
    return "other"


def check_data_processing(
    *,
    content_type: str,
    accept: str,
    split_type: SplitType,
    assemble_with: AssembleWith,
    input_filter: str | None = None,
    join_source: JoinSource = "None",
    output_filter: str | None = None,
) -> None:
    """Refuse DataProcessing settings that cannot work, before any record is read.

    The rules (contract §4.3, plus what skmaker needs to apply them per record):

    * the filters parse (`jsonpath.parse_json_path`); empty or None means `$`;
    * a join needs SplitType equal to AssembleWith and Accept of ContentType's format
      (CSV with CSV; JSON or JSON Lines with either);
    * filters and joins need CSV or JSON records, and CSV ones need SplitType `Line`;
    * an OutputFilter on `Line` records needs AssembleWith `Line`, which separates outputs.

    Args:
        content_type: The transform's ContentType.
        accept: The transform's Accept.
        split_type: `"None"` or `"Line"`.
        assemble_with: `"None"` or `"Line"`.
        input_filter: The InputFilter expression.
        join_source: `"None"` or `"Input"`.
        output_filter: The OutputFilter expression.

    Raises:
        InvalidDataProcessing: (a `ValueError`) The settings conflict; the message says how.
    """
    _plan(content_type, accept, split_type, assemble_with, input_filter, join_source, output_filter)


def apply_input_filter(record: bytes, content_type: str, path: JsonPath | str) -> bytes:
    """Apply an InputFilter to one record and write the result in the record's format.

    Args:
        record: One CSV line or JSON value, without its line end.
        content_type: The record's media type.
        path: The filter.

    Returns:
        The filtered record: `$[1:]` on `7,5.1,3.5` is `5.1,3.5`.

    Raises:
        RecordProcessingError: The record does not fit the path, or cannot be read.
    """
    return _filter(record, record_format(content_type), _path(path))


def apply_output_filter(record: bytes, content_type: str, path: JsonPath | str) -> bytes:
    """Apply an OutputFilter to one output (joined or not) and write it in its format.

    Args:
        record: One output record, without its line end.
        content_type: Its media type: the input's after a join, else the answer's.
        path: The filter.

    Returns:
        The filtered record: `$[0,-1]` on `7,5.1,3.5,1` is `7,1`.

    Raises:
        RecordProcessingError: The record does not fit the path, or cannot be read.
    """
    return _filter(record, record_format(content_type), _path(path))


def join_output(input_record: bytes, prediction_record: bytes, content_type: str) -> bytes:
    """Join an input record with its prediction, as JoinSource `Input` does (contract §4.3).

    * CSV: the input's fields followed by the prediction's: `1,2,3` and `1` give `1,2,3,1`,
      the input's text unchanged.
    * JSON: an object input gains `SageMakerOutput`; any other input is wrapped as
      `{"SageMakerInput": input, "SageMakerOutput": prediction}`.

    Args:
        input_record: The original (unfiltered) input record.
        prediction_record: The model's output for it.
        content_type: The records' media type.

    Returns:
        The joined record.

    Raises:
        RecordProcessingError: A JSON input already holds `SageMakerOutput`, or a record cannot
            be read in the format.
    """
    fmt = record_format(content_type)
    if fmt == "csv":
        return input_record + b"," + prediction_record
    if fmt == "json":
        return _dump(_join_json(_load(input_record), _load(prediction_record)))
    raise RecordProcessingError(f"cannot join records of type {content_type!r}")


def split_outputs(body: bytes, content_type: str, count: int) -> list[bytes]:
    """Split a model's answer to a mini-batch of `count` records into one output per record.

    * CSV and JSON Lines answers: one line per record (the last line end is optional).
    * `application/json`: one array element per record; an answer that is not one JSON value
      is read as JSON Lines. A single record's non-array answer is its output.
    * Anything else can only be split when there is one record.

    Args:
        body: The answer.
        content_type: The answer's media type.
        count: How many records the mini-batch held.

    Returns:
        `count` outputs, without line ends.

    Raises:
        OutputCountMismatch: The answer does not hold one output per record.
    """
    media = parse_media_type(content_type)
    if media == CSV or media in JSON_LINES_TYPES:
        lines = _body_lines(body)
        if len(lines) == count:
            return lines
        raise _mismatch(len(lines), count, media, "lines")
    if media == JSON or media.endswith("+json"):
        try:
            value = json.loads(body)
        except ValueError:
            value = _NOT_JSON
        if isinstance(value, list) and len(value) == count:
            return [_dump(item) for item in value]
        if value is not _NOT_JSON:
            if count == 1:
                return [_strip_line_end(body)]
            got = len(value) if isinstance(value, list) else 1
            raise _mismatch(got, count, media, "array elements")
        lines = _body_lines(body)
        if len(lines) == count:
            return lines
        raise _mismatch(len(lines), count, media, "JSON lines")
    if count == 1:
        return [body]
    raise OutputCountMismatch(
        f"an answer of type {media} cannot be split into one output per record; ask for "
        f"{CSV} or {JSON}, or use BatchStrategy SingleRecord"
    )


def process_batch(
    batch: MiniBatch | Sequence[bytes],
    handler_invoke: HandlerInvoke,
    *,
    content_type: str,
    accept: str,
    split_type: SplitType,
    assemble_with: AssembleWith,
    input_filter: str | None = None,
    join_source: JoinSource = "None",
    output_filter: str | None = None,
) -> bytes:
    """Score one mini-batch and return the bytes to append to the shard's output.

    1. InputFilter each record (skipped for `$`: the mini-batch's body goes as it is).
    2. Call the model once: the records joined with `\\n` (SplitType `Line`) or the one
       record (`None`) as the body, with ContentType and Accept.
    3. With AssembleWith `None` and no join or OutputFilter, return the answer as it came:
       SageMaker's raw concatenation of response bodies.
    4. Otherwise split the answer into one output per record (`split_outputs`), join each
       with its unfiltered input (JoinSource `Input`), apply the OutputFilter, and write
       each output followed by `\\n` (AssembleWith `Line`) or as is (`None`, one record).

    AssembleWith `Line` without join or filters checks the answer with one count of its line
    ends and returns it unchanged when it already is one line per record.

    Args:
        batch: The mini-batch (from `records.iter_batches`), or its records; SplitType
            `None` has one record per mini-batch.
        handler_invoke: `ModelHandler.invoke(body, content_type, accept) -> (body, type)`.
        content_type: The transform's ContentType.
        accept: The transform's Accept.
        split_type: `"None"` or `"Line"`.
        assemble_with: `"None"` or `"Line"`.
        input_filter: The InputFilter; None or `"$"` sends records whole.
        join_source: `"Input"` joins each output with its input record.
        output_filter: The OutputFilter; None or `"$"` keeps outputs whole.

    Returns:
        The output bytes for these records.

    Raises:
        InvalidDataProcessing: The settings conflict (see `check_data_processing`).
        RecordProcessingError: A record does not fit a filter or the join.
        OutputCountMismatch: The answer does not hold one output per record where one is
            needed: the model must return one output per record.
        SkmakerError: Whatever `handler_invoke` raises (InvalidArgument, ModelError).
    """
    if not isinstance(batch, MiniBatch):
        batch = MiniBatch.of(batch)
    count = batch.count
    if not count:
        return b""
    plan = _plan(
        content_type, accept, split_type, assemble_with, input_filter, join_source, output_filter
    )
    if split_type == "None" and count != 1:
        raise InvalidDataProcessing(
            f"SplitType 'None' sends one record per request, got a mini-batch of {count}"
        )
    # Records are split out of the body only when some step works per record.
    records = batch.records if plan.input_filter is not None or plan.join else []
    body = batch.body
    if plan.input_filter is not None:
        path = plan.input_filter
        body = b"\n".join([_filter(record, plan.input_format, path) for record in records])
    answer, answer_type = handler_invoke(body, content_type, accept)
    if not plan.needs_outputs_per_record:
        return answer
    if split_type == "None":
        # The whole object was one record, so the whole answer is its one output.
        outputs = [_strip_line_end(answer)]
    elif not plan.join and plan.output_filter is None:
        fast = _lines_as_they_are(answer, answer_type or accept, count)
        if fast is not None:
            return fast
        outputs = split_outputs(answer, answer_type or accept, count)
    else:
        outputs = split_outputs(answer, answer_type or accept, count)
    if plan.join:
        if plan.output_filter is None and plan.input_format == "csv":
            # Plain concatenation keeps both texts exactly as they were.
            outputs = [inp + b"," + out for inp, out in zip(records, outputs, strict=True)]
        else:
            outputs = [
                _join_and_filter(inp, out, plan) for inp, out in zip(records, outputs, strict=True)
            ]
    elif plan.output_filter is not None:
        output_format = record_format(answer_type or accept)
        outputs = [_filter(out, output_format, plan.output_filter) for out in outputs]
    if assemble_with == "Line":
        outputs.append(b"")
        return b"\n".join(outputs)
    return b"".join(outputs)


@functools.lru_cache(maxsize=64)
def _plan(
    content_type: str,
    accept: str,
    split_type: SplitType,
    assemble_with: AssembleWith,
    input_filter: str | None,
    join_source: JoinSource,
    output_filter: str | None,
) -> _Plan:
    if split_type not in ("None", "Line"):
        raise InvalidDataProcessing(f"SplitType must be 'None' or 'Line', got {split_type!r}")
    if assemble_with not in ("None", "Line"):
        raise InvalidDataProcessing(f"AssembleWith must be 'None' or 'Line', got {assemble_with!r}")
    if join_source not in ("None", "Input"):
        raise InvalidDataProcessing(f"JoinSource must be 'None' or 'Input', got {join_source!r}")
    in_path = _optional_path(input_filter)
    out_path = _optional_path(output_filter)
    join = join_source == "Input"
    input_format = record_format(content_type)
    if join:
        if split_type != assemble_with:
            raise InvalidDataProcessing(
                "JoinSource 'Input' needs SplitType and AssembleWith to be equal (both 'Line' "
                f"for one output line per input line), got {split_type!r} and {assemble_with!r}"
            )
        if not accept or record_format(accept) != input_format:
            raise InvalidDataProcessing(
                f"JoinSource 'Input' needs an Accept of the ContentType's format, so each "
                f"output can be joined to its input; got {content_type!r} and {accept!r}"
            )
    if in_path is not None or join:
        _check_processable(input_format, content_type, split_type, "an InputFilter or a join")
    if out_path is not None:
        output_type = content_type if join else accept
        _check_processable(record_format(output_type), output_type, split_type, "OutputFilter")
        if split_type == "Line" and assemble_with != "Line":
            raise InvalidDataProcessing(
                "an OutputFilter on Line records needs AssembleWith 'Line', which writes one "
                "output a line"
            )
    return _Plan(input_format, in_path, out_path, join, split_type, assemble_with)


def _check_processable(fmt: RecordFormat, media: str, split_type: SplitType, what: str) -> None:
    if fmt == "other":
        raise InvalidDataProcessing(f"{what} works on CSV and JSON records; {media!r} is neither")
    if fmt == "csv" and split_type != "Line":
        raise InvalidDataProcessing(f"{what} on CSV works line by line: use SplitType 'Line'")


def _optional_path(text: str | None) -> JsonPath | None:
    if not text:
        return None
    path = parse_json_path(text)
    return None if path.is_root else path


def _path(path: JsonPath | str) -> JsonPath:
    return parse_json_path(path) if isinstance(path, str) else path


def _filter(record: bytes, fmt: RecordFormat, path: JsonPath) -> bytes:
    if fmt == "csv":
        return _csv_write(path.evaluate(_csv_fields(record)))
    if fmt == "json":
        return _dump(path.evaluate(_load(record)))
    raise RecordProcessingError("filters apply to CSV and JSON records only")


def _join_and_filter(input_record: bytes, output: bytes, plan: _Plan) -> bytes:
    if plan.input_format == "csv":
        value: Any = _csv_fields(input_record) + _csv_fields(output)
    else:
        value = _join_json(_load(input_record), _load(output))
    if plan.output_filter is not None:
        value = plan.output_filter.evaluate(value)
    return _csv_write(value) if plan.input_format == "csv" else _dump(value)


def _join_json(input_value: Any, prediction: Any) -> Any:
    if isinstance(input_value, dict):
        if "SageMakerOutput" in input_value:
            raise RecordProcessingError(
                "the input record already has a 'SageMakerOutput' member, which the join "
                "would overwrite; rename it or filter it out"
            )
        return {**input_value, "SageMakerOutput": prediction}
    return {"SageMakerInput": input_value, "SageMakerOutput": prediction}


def _csv_fields(record: bytes) -> list[str]:
    # latin-1 maps every byte to one character, so fields round-trip to the exact bytes of
    # any ASCII-compatible encoding (UTF-8 included) without decoding errors.
    text = record.decode("latin-1")
    if '"' not in text:
        return text.split(",")
    try:
        return next(csv.reader([text], strict=True))
    except csv.Error as err:
        raise RecordProcessingError(f"malformed CSV record: {err}") from None


def _csv_write(value: Any) -> bytes:
    if isinstance(value, str):
        fields = [value]
    elif isinstance(value, list) and all(isinstance(field, str) for field in value):
        fields = value
    else:
        raise RecordProcessingError(
            "a filter on CSV records must select fields by index ($[1:], $[0,-1], $[2])"
        )
    line = ",".join(fields)
    if '"' in line or "\n" in line or "\r" in line or line.count(",") != len(fields) - 1:
        # Some field needs quotes; the csv module adds them only where needed.
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="").writerow(fields)
        line = buffer.getvalue()
    return line.encode("latin-1")


def _load(record: bytes) -> Any:
    try:
        return json.loads(record)
    except ValueError as err:
        raise RecordProcessingError(f"the record is not valid JSON: {err}") from None


def _dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def _body_lines(body: bytes) -> list[bytes]:
    if not body:
        return []
    if b"\r" in body:
        body = body.replace(b"\r\n", b"\n")
    if body.endswith(b"\n"):
        body = body[:-1]
    return body.split(b"\n")


def _strip_line_end(body: bytes) -> bytes:
    if body.endswith(b"\r\n"):
        return body[:-2]
    if body.endswith(b"\n"):
        return body[:-1]
    return body


def _lines_as_they_are(answer: bytes, content_type: str, count: int) -> bytes | None:
    """Return a line-per-record answer as the Line-assembled output, or None to split it."""
    media = parse_media_type(content_type)
    if (media != CSV and media not in JSON_LINES_TYPES) or b"\r" in answer:
        return None
    newlines = answer.count(b"\n")
    if newlines == count and answer.endswith(b"\n"):
        return answer
    if newlines == count - 1 and answer and not answer.endswith(b"\n"):
        return answer + b"\n"
    return None


def _mismatch(got: int, count: int, media: str, unit: str) -> OutputCountMismatch:
    return OutputCountMismatch(
        f"the model returned {got} {unit} for a mini-batch of {count} records; with a join, "
        "an OutputFilter or AssembleWith 'Line', the model must return one output per record, "
        f"in order ({media}: one {unit[:-1] if unit.endswith('s') else unit} per record). "
        "Empty input lines are records too, and the default CSV decoder skips them"
    )
