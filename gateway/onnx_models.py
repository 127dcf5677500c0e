"""Approved ONNX models, run in the domain with onnxruntime.

A leaf: the only module that imports onnxruntime (an optional dependency, `veilgate[onnx]`).
A model file is named relative to the policy directory and pinned by the SHA-256 the bundle
approved; it is read, checked against that hash, and opened once per (file, hash), so a file
changed on disk after approval is never run: the model is unavailable until a bundle approves
the new bytes.

SECURITY: the session runs on the CPU provider only, single-threaded, with no custom operators;
its inputs are the numbers the service computed from the domain, and only one number per row
comes back to be turned into a score.
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gateway.errors import ServiceUnavailable


@dataclass(frozen=True, slots=True)
class _Opened:
    session: Any
    input_name: str
    output_name: str


class OnnxModels:
    def __init__(self, policy_dir: Path) -> None:
        self._dir = policy_dir
        self._opened: dict[tuple[str, str, str, str | None, int], _Opened] = {}
        self._lock = threading.Lock()

    def problem(self, file: str, sha256: str, *, input_name: str, output_name: str | None, width: int) -> str | None:
        """Why this model cannot run, or None: for `policy check` and for serving."""
        try:
            self._open(file, sha256, input_name, output_name, width)
        except ServiceUnavailable as exc:
            return exc.detail
        return None

    def run(
        self, file: str, sha256: str, *, input_name: str, output_name: str | None, rows: list[list[float]]
    ) -> list[float | None]:
        """One number per row, None where the model failed on that row or gave no finite number;
        ServiceUnavailable if the file is not the approved one or does not load.

        SECURITY: whether a run fails or gives NaN depends on the entity's values (a division by
        a feature that is zero for some); refused, it told that bit for free, before anything was
        counted. The caller answers it like any other result, counted and billed. Neither the
        error's text (onnxruntime puts values in it) nor its own log reaches any log."""
        if not rows:
            return []
        opened = self._open(file, sha256, input_name, output_name, len(rows[0]))
        batch = np.asarray(rows, dtype=np.float32)
        try:
            (result,) = opened.session.run([opened.output_name], {opened.input_name: batch}, _quiet_run())
        except Exception:
            return [None] * len(rows)  # it ran on the probe rows when it opened: these values failed it
        values = np.asarray(result, dtype=np.float64).reshape(-1)
        if values.shape[0] != len(rows):  # the model's shape, not the data's: no entity is answered
            raise ServiceUnavailable("the model did not give one number per entity")
        return [float(v) if math.isfinite(v) else None for v in values.tolist()]

    def _open(self, file: str, sha256: str, input_name: str, output_name: str | None, width: int) -> _Opened:
        slot = (file, sha256, input_name, output_name, width)
        with self._lock:
            held = self._opened.get(slot)
            if held is None:
                held = self._opened[slot] = self._load(file, sha256, input_name, output_name, width)
        return held

    def _load(self, file: str, sha256: str, input_name: str, output_name: str | None, width: int) -> _Opened:
        try:
            import onnxruntime  # noqa: PLC0415 - optional (`veilgate[onnx]`), needed once a model opens
        except ImportError:
            raise ServiceUnavailable("ONNX models need onnxruntime: pip install 'veilgate[onnx]'") from None
        path = (self._dir / file).resolve()
        if not path.is_relative_to(self._dir.resolve()):
            raise ServiceUnavailable(f"model file {file} is outside the policy directory")
        try:
            data = path.read_bytes()
        except OSError:
            raise ServiceUnavailable(f"model file {file} cannot be read") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ServiceUnavailable(f"model file {file} is not the approved one (its SHA-256 differs)")
        onnxruntime.set_default_logger_severity(4)  # fatal only: its messages hold input values
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 4
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            session = onnxruntime.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a file that hashes right but does not load: say so, log the cause
            raise ServiceUnavailable(f"model file {file} does not load as an ONNX model") from exc
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        if inputs != [input_name]:
            raise ServiceUnavailable(f"the model's inputs are {inputs}, not [{input_name!r}]")
        chosen = output_name or outputs[0]
        if chosen not in outputs:
            raise ServiceUnavailable(f"the model has no output {chosen!r} (it has {outputs})")
        shape = session.get_inputs()[0].shape
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != width):
            raise ServiceUnavailable(f"the model's input is {shape}, not [rows, {width}] for its {width} features")
        # A probe of two rows of zeros: a model that cannot run at all, or gives other than one
        # number a row, is refused here (503, nothing billed), so a failure while serving is the data's.
        try:
            (probe,) = session.run([chosen], {input_name: np.zeros((2, width), dtype=np.float32)}, _quiet_run())
        except Exception:
            raise ServiceUnavailable(f"model file {file} does not run on rows of zeros") from None
        if np.asarray(probe).size != 2:
            raise ServiceUnavailable(f"model file {file} does not give one number per row")
        return _Opened(session, input_name, chosen)


def _quiet_run() -> Any:
    """Run options that keep onnxruntime's own log to fatal errors (an index out of bounds names
    the index, which is a feature's value)."""
    import onnxruntime  # noqa: PLC0415 - loaded already by `_load`

    options = onnxruntime.RunOptions()
    options.log_severity_level = 4
    return options
