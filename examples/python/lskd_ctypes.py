# SPDX-License-Identifier: MIT
"""Python bindings of liblskd_c through ctypes: the logit-standardized KD loss on numpy arrays,
without copying them, and a torch.autograd.Function for CPU tensors.

The library is found, in this order, at the path in the environment variable LSKD_LIBRARY, next
to this file, in ../../src relative to this file (where it sits in lskd's build tree, into which
CMake copies this module), and where the system's loader finds "lskd_c".

    import numpy as np, lskd_ctypes
    student = np.random.randn(8, 100).astype(np.float32)
    teacher = np.random.randn(8, 100).astype(np.float32)
    loss, grad_student, _ = lskd_ctypes.kd_loss_and_grad(student, teacher, temperature=2.0)

Arrays must be 2-D float32 or float64 in native byte order, aligned, with contiguous rows (unit
stride along the classes); the rows may be apart (a view of the first columns of a wider array
is passed as is, its leading dimension being strides[0] / itemsize). Anything else raises a
TypeError or ValueError naming the argument: nothing is copied behind your back. Failures inside
the library raise LskdError (a ValueError for bad arguments or data, a MemoryError for memory)
with the library's message. The library releases the GIL (ctypes does) and runs each call on
the calling thread.
"""

import ctypes
import ctypes.util
import os

import numpy as np

__all__ = [
    "LskdError", "LskdInvalidArgument", "LskdDomainError", "LskdOutOfMemory", "dkd_loss",
    "kd_loss", "kd_loss_and_grad", "kd_loss_weighted", "load_library", "simd_arch", "version",
]

_REDUCTIONS = {"none": 0, "sum": 1, "batchmean": 2}

# Return codes of the C API (include/lskd/c_api.h).
_OK, _INVALID_ARGUMENT, _DOMAIN, _OUT_OF_MEMORY, _INTERNAL = 0, 1, 2, 3, 4


class LskdError(Exception):
    """A failure reported by liblskd_c; `code` is the C API's return code."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


class LskdInvalidArgument(LskdError, ValueError):
    """A bad shape, leading dimension, pointer or option (LSKD_ERROR_INVALID_ARGUMENT)."""


class LskdDomainError(LskdError, ValueError):
    """Bad data: a NaN or infinite logit, a constant row with eps 0 (LSKD_ERROR_DOMAIN)."""


class LskdOutOfMemory(LskdError, MemoryError):
    """An allocation failed inside the library (LSKD_ERROR_OUT_OF_MEMORY)."""


class _Options(ctypes.Structure):
    _fields_ = [
        ("temperature", ctypes.c_double),
        ("standardize", ctypes.c_int),
        ("ddof", ctypes.c_int),
        ("eps", ctypes.c_double),
        ("reduction", ctypes.c_int),
        ("scale_by_t2", ctypes.c_int),
    ]


class _DkdOptions(ctypes.Structure):
    _fields_ = [
        ("temperature", ctypes.c_double),
        ("alpha", ctypes.c_double),
        ("beta", ctypes.c_double),
        ("standardize", ctypes.c_int),
        ("ddof", ctypes.c_int),
        ("eps", ctypes.c_double),
        ("reduction", ctypes.c_int),
        ("scale_by_t2", ctypes.c_int),
    ]


_library = None


def _candidate_paths():
    here = os.path.dirname(os.path.abspath(__file__))
    explicit = os.environ.get("LSKD_LIBRARY")
    if explicit:
        return [explicit]  # asked for: no other library may stand in for it
    paths = [
        os.path.join(here, "liblskd_c.so"),
        os.path.join(here, os.pardir, os.pardir, "src", "liblskd_c.so"),
    ]
    system = ctypes.util.find_library("lskd_c")
    if system:
        paths.append(system)
    return paths


def load_library(path=None):
    """Loads liblskd_c (once) and declares its functions. Returns the ctypes.CDLL."""
    global _library
    if _library is not None and path is None:
        return _library
    tried = [path] if path else _candidate_paths()
    errors = []
    for candidate in tried:
        if os.sep in candidate and not os.path.exists(candidate):
            errors.append(f"{candidate}: no such file")
            continue
        try:
            library = ctypes.CDLL(candidate)
            break
        except OSError as error:
            errors.append(f"{candidate}: {error}")
    else:
        raise OSError("cannot load liblskd_c; set LSKD_LIBRARY to its path. Tried:\n  "
                      + "\n  ".join(errors or ["(no candidate)"]))

    pointer, int64, double_p = ctypes.c_void_p, ctypes.c_int64, ctypes.POINTER(ctypes.c_double)
    for name in ("lskd_kd_f32", "lskd_kd_f64"):
        function = getattr(library, name)
        function.argtypes = [pointer, int64, pointer, int64, int64, int64,
                             ctypes.POINTER(_Options), double_p, pointer, int64, pointer, int64]
        function.restype = ctypes.c_int
    for name in ("lskd_kd_weighted_f32", "lskd_kd_weighted_f64"):
        function = getattr(library, name)
        function.argtypes = [pointer, int64, pointer, int64, int64, int64,
                             ctypes.POINTER(_Options), pointer, ctypes.c_double, double_p,
                             pointer, int64, pointer, int64, double_p]
        function.restype = ctypes.c_int
    for name in ("lskd_dkd_f32", "lskd_dkd_f64"):
        function = getattr(library, name)
        function.argtypes = [pointer, int64, pointer, int64, int64, int64,
                             ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(_DkdOptions),
                             double_p, pointer, int64, pointer, int64, double_p]
        function.restype = ctypes.c_int
    library.lskd_dkd_options_init.argtypes = [ctypes.POINTER(_DkdOptions)]
    library.lskd_dkd_options_init.restype = None
    for name in ("lskd_last_error", "lskd_simd_arch", "lskd_version"):
        getattr(library, name).argtypes = []
        getattr(library, name).restype = ctypes.c_char_p
    library.lskd_kd_options_init.argtypes = [ctypes.POINTER(_Options)]
    library.lskd_kd_options_init.restype = None
    if path is None:
        _library = library
    return library


def simd_arch():
    """The instruction set liblskd_c chose on this CPU ("avx512f", "fma3+avx2", ...)."""
    return load_library().lskd_simd_arch().decode()


def version():
    """liblskd_c's version string."""
    return load_library().lskd_version().decode()


def _check_matrix(name, array, dtype=None, shape=None, writeable=False):
    """Checks one array and returns its leading dimension in elements."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"'{name}' must be a numpy.ndarray (got {type(array).__name__})")
    if array.dtype not in (np.float32, np.float64) or not array.dtype.isnative:
        raise TypeError(f"'{name}' must have dtype float32 or float64 in native byte order "
                        f"(got {array.dtype.str}); convert it with .astype(np.float32)")
    if dtype is not None and array.dtype != dtype:
        raise TypeError(f"'{name}' has dtype {array.dtype} but 'student' has {dtype}; "
                        "they must match")
    if array.ndim != 2:
        raise ValueError(f"'{name}' must be 2-D (rows x classes); got {array.ndim}-D "
                         f"shape {array.shape}")
    if shape is not None and array.shape != shape:
        raise ValueError(f"'{name}' has shape {array.shape} but 'student' has {shape}")
    rows, cols = array.shape
    itemsize = array.itemsize
    if cols > 1 and array.strides[1] != itemsize:
        raise ValueError(f"'{name}' does not have contiguous rows (strides {array.strides}, "
                         f"item size {itemsize}): it must be row-major with unit stride along "
                         f"the classes; pass np.ascontiguousarray({name}) to copy it")
    if rows <= 1:
        ld = cols  # a single row's stride is meaningless (numpy may report anything)
    else:
        if array.strides[0] <= 0 or array.strides[0] % itemsize != 0:
            raise ValueError(f"'{name}' has a row stride of {array.strides[0]} bytes; it must "
                             f"be a positive multiple of the item size {itemsize}")
        ld = array.strides[0] // itemsize
        if ld < cols:
            raise ValueError(f"'{name}' has rows {ld} elements apart but {cols} classes: its "
                             "rows overlap")
    if not array.flags.aligned:
        raise ValueError(f"'{name}' is not aligned to its item size; copy it with "
                         f"np.ascontiguousarray({name}) or np.require(..., requirements='A')")
    if writeable and not array.flags.writeable:
        raise ValueError(f"'{name}' is an output and must be writeable")
    return ld


def _real(name, value):
    """A real number as float; refuses strings, booleans and complex values that float() would
    take or mangle (float("2"), float(True))."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"'{name}' must be a real number (got {value!r})")
    return float(value)


# The C spelling of each integer type an option is passed as, for error messages.
_C_INTEGER_NAMES = {ctypes.c_int: "int", ctypes.c_int64: "int64_t"}


def _integer(name, value, c_type=ctypes.c_int):
    """An integer as int, in the range of the C integer type it is passed as (ctypes would keep
    only its low bits: ddof 2**32 + 1 would run as 1); refuses 1.9 (which int() would truncate),
    strings and booleans."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"'{name}' must be an integer (got {value!r})")
    value = int(value)
    bits = 8 * ctypes.sizeof(c_type)
    low, high = -2 ** (bits - 1), 2 ** (bits - 1) - 1
    if not low <= value <= high:
        raise ValueError(f"'{name}' is {value}, outside the range of a C "
                         f"{_C_INTEGER_NAMES[c_type]} ({low} to {high})")
    return value


def _flag(name, value):
    """A bool option as 0 or 1; refuses anything but a bool or numpy bool (bool("no") is True,
    and a number or None is more likely a misplaced argument than a truth value)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"'{name}' must be a bool (got {value!r})")
    return 1 if value else 0


def _reduction(reduction):
    """The C code of a reduction's name."""
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"'reduction' must be one of {sorted(_REDUCTIONS)} (got {reduction!r})")
    return _REDUCTIONS[reduction]


def _set_common(options, temperature, standardize, ddof, eps, reduction, scale_by_t2):
    """The checked fields that lskd_kd_options and lskd_dkd_options share, set on `options`."""
    options.reduction = _reduction(reduction)
    options.temperature = _real("temperature", temperature)
    options.standardize = _flag("standardize", standardize)
    options.ddof = _integer("ddof", ddof)
    options.eps = _real("eps", eps)
    options.scale_by_t2 = _flag("scale_by_t2", scale_by_t2)
    return options


def _options(temperature, standardize, ddof, eps, reduction, scale_by_t2):
    options = _Options()
    load_library().lskd_kd_options_init(ctypes.byref(options))
    return _set_common(options, temperature, standardize, ddof, eps, reduction, scale_by_t2)


def _raise_for(code, library):
    message = library.lskd_last_error().decode(errors="replace")
    kind = {_INVALID_ARGUMENT: LskdInvalidArgument, _DOMAIN: LskdDomainError,
            _OUT_OF_MEMORY: LskdOutOfMemory}.get(code, LskdError)
    raise kind(message or f"liblskd_c failed with code {code}", code)


def kd_loss(student, teacher, *, temperature=2.0, standardize=True, ddof=1, eps=1e-7,
            reduction="batchmean", scale_by_t2=True, grad_student=None, grad_teacher=None):
    """The KD loss of `student` against `teacher` logits (rows x classes, same dtype).

    Returns a float, or with reduction="none" a float64 array of one loss per row. If
    `grad_student` / `grad_teacher` are given (arrays of the same shape and dtype, writeable,
    with contiguous rows), they receive the gradient of the reduced loss (with "none", of the
    sum of the row losses) with respect to the student / teacher logits, in place.
    """
    library = load_library()
    ld_student = _check_matrix("student", student)
    ld_teacher = _check_matrix("teacher", teacher, dtype=student.dtype, shape=student.shape)
    outputs = {}
    for name, array in (("grad_student", grad_student), ("grad_teacher", grad_teacher)):
        if array is None:
            outputs[name] = (None, 0)
        else:
            ld = _check_matrix(name, array, dtype=student.dtype, shape=student.shape,
                               writeable=True)
            outputs[name] = (array.ctypes.data, ld)
    options = _options(temperature, standardize, ddof, eps, reduction, scale_by_t2)
    rows, cols = student.shape
    losses = np.empty(rows if reduction == "none" else 1, dtype=np.float64)
    function = library.lskd_kd_f32 if student.dtype == np.float32 else library.lskd_kd_f64
    code = function(student.ctypes.data, ld_student, teacher.ctypes.data, ld_teacher, rows, cols,
                    ctypes.byref(options),
                    losses.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
                    outputs["grad_student"][0], outputs["grad_student"][1],
                    outputs["grad_teacher"][0], outputs["grad_teacher"][1])
    if code != _OK:
        _raise_for(code, library)
    return losses if reduction == "none" else float(losses[0])


def _gradient_outputs(student, grad_student, grad_teacher):
    """(pointer, leading dimension) of each gradient array, or (None, 0)."""
    outputs = []
    for name, array in (("grad_student", grad_student), ("grad_teacher", grad_teacher)):
        if array is None:
            outputs.append((None, 0))
        else:
            ld = _check_matrix(name, array, dtype=student.dtype, shape=student.shape,
                               writeable=True)
            outputs.append((array.ctypes.data, ld))
    return outputs


def _check_vector(name, values, dtype, length):
    """`values` as a contiguous 1-D array of `dtype` and `length` (a copy only if needed: these
    are per-row values, not logits). Only integer or real numbers are taken: strings would be
    parsed, booleans read as 1 and 0, and complex numbers lose their imaginary part."""
    kind = np.asarray(values).dtype.kind
    if kind not in "iuf":
        raise TypeError(f"'{name}' must hold real numbers (got values of dtype "
                        f"{np.asarray(values).dtype})")
    array = np.ascontiguousarray(values, dtype=dtype)
    if array.shape != (length,):
        raise ValueError(f"'{name}' must have shape ({length},) (one value per row); got "
                         f"{array.shape}")
    return array


def _check_targets(targets, rows):
    """`targets` as a contiguous int64 array of `rows` class indices. Integer arrays and lists
    of integers are taken as they are, and so are floats with an integral value (2.0); 2.7, NaN,
    booleans and strings are refused rather than truncated or parsed."""
    values = np.asarray(targets)
    if values.dtype.kind == "f":
        integral = np.isfinite(values)
        integral[integral] = (values[integral] == np.trunc(values[integral])) & (
            np.abs(values[integral]) < 2.0 ** 63)
        if not integral.all():
            first = int(np.flatnonzero(~integral)[0])
            raise ValueError(f"'targets' must hold integer class indices; targets[{first}] is "
                             f"{values.flat[first]!r}")
    elif values.dtype.kind not in "iu":
        raise TypeError(f"'targets' must hold integer class indices (got values of dtype "
                        f"{values.dtype})")
    elif values.dtype.kind == "u" and np.any(values > np.uint64(np.iinfo(np.int64).max)):
        # Converted to int64 it would wrap to a negative index, and the error would show that.
        # (The limit is a uint64: against a Python int numpy compares in float64.)
        first = int(np.flatnonzero(values > np.uint64(np.iinfo(np.int64).max))[0])
        raise ValueError(f"'targets' must hold class indices; targets[{first}] is "
                         f"{int(values.flat[first])}, beyond any class")
    return _check_vector("targets", values, np.int64, rows)


def kd_loss_weighted(student, teacher, row_weights=None, *, normalizer=0.0, temperature=2.0,
                     standardize=True, ddof=1, eps=1e-7, reduction="batchmean",
                     scale_by_t2=True, grad_student=None, grad_teacher=None,
                     return_grad_temperature=False):
    """kd_loss() over weighted rows (lskd_kd_weighted_f32/f64).

    `row_weights`: None (all 1) or one finite value >= 0 per row (converted to the logits'
    dtype); a row of weight 0 is not read and gets a zero gradient. `normalizer` > 0 is what
    "batchmean" divides the weighted sum by (0: the sum of the weights). With "none" the result
    holds weight * loss per row. With `return_grad_temperature` the result is (loss,
    d(loss)/d(temperature)).
    """
    library = load_library()
    ld_student = _check_matrix("student", student)
    ld_teacher = _check_matrix("teacher", teacher, dtype=student.dtype, shape=student.shape)
    (gs_pointer, gs_ld), (gt_pointer, gt_ld) = _gradient_outputs(student, grad_student,
                                                                 grad_teacher)
    rows, cols = student.shape
    weights = None if row_weights is None else _check_vector("row_weights", row_weights,
                                                              student.dtype, rows)
    options = _options(temperature, standardize, ddof, eps, reduction, scale_by_t2)
    want_tau = _flag("return_grad_temperature", return_grad_temperature)
    losses = np.empty(rows if reduction == "none" else 1, dtype=np.float64)
    tau = ctypes.c_double(0.0)
    function = (library.lskd_kd_weighted_f32 if student.dtype == np.float32
                else library.lskd_kd_weighted_f64)
    code = function(student.ctypes.data, ld_student, teacher.ctypes.data, ld_teacher, rows, cols,
                    ctypes.byref(options), None if weights is None else weights.ctypes.data,
                    _real("normalizer", normalizer), losses.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
                    gs_pointer, gs_ld, gt_pointer, gt_ld,
                    ctypes.byref(tau) if want_tau else None)
    if code != _OK:
        _raise_for(code, library)
    loss = losses if reduction == "none" else float(losses[0])
    return (loss, tau.value) if want_tau else loss


def dkd_loss(student, teacher, targets, *, temperature=4.0, alpha=1.0, beta=8.0,
             standardize=False, ddof=1, eps=1e-7, reduction="batchmean", scale_by_t2=True,
             grad_student=None, grad_teacher=None, return_grad_temperature=False):
    """The DKD loss (lskd_dkd_f32/f64) of `student` against `teacher` logits given each row's
    true class in `targets` (one integer per row, converted to int64; a float must be a whole
    number, so 2.7 raises ValueError instead of becoming 2). The defaults are the DKD paper's;
    standardize=True gives DKD with logit standardization. Outputs and the result as in
    kd_loss_weighted().
    """
    library = load_library()
    ld_student = _check_matrix("student", student)
    ld_teacher = _check_matrix("teacher", teacher, dtype=student.dtype, shape=student.shape)
    (gs_pointer, gs_ld), (gt_pointer, gt_ld) = _gradient_outputs(student, grad_student,
                                                                 grad_teacher)
    rows, cols = student.shape
    target_array = _check_targets(targets, rows)
    options = _DkdOptions()
    library.lskd_dkd_options_init(ctypes.byref(options))
    _set_common(options, temperature, standardize, ddof, eps, reduction, scale_by_t2)
    options.alpha = _real("alpha", alpha)
    options.beta = _real("beta", beta)
    want_tau = _flag("return_grad_temperature", return_grad_temperature)
    losses = np.empty(rows if reduction == "none" else 1, dtype=np.float64)
    tau = ctypes.c_double(0.0)
    function = library.lskd_dkd_f32 if student.dtype == np.float32 else library.lskd_dkd_f64
    code = function(student.ctypes.data, ld_student, teacher.ctypes.data, ld_teacher, rows, cols,
                    target_array.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)),
                    ctypes.byref(options), losses.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
                    gs_pointer, gs_ld, gt_pointer, gt_ld,
                    ctypes.byref(tau) if want_tau else None)
    if code != _OK:
        _raise_for(code, library)
    loss = losses if reduction == "none" else float(losses[0])
    return (loss, tau.value) if want_tau else loss


def kd_loss_and_grad(student, teacher, *, teacher_grad=False, **options):
    """The loss and freshly allocated gradients: (loss, grad_student, grad_teacher or None).
    `options` are those of kd_loss()."""
    grad_student = np.empty(student.shape, dtype=student.dtype)
    grad_teacher = (np.empty(student.shape, dtype=student.dtype)
                    if _flag("teacher_grad", teacher_grad) else None)
    loss = kd_loss(student, teacher, grad_student=grad_student, grad_teacher=grad_teacher,
                   **options)
    return loss, grad_student, grad_teacher


try:
    import torch
except ImportError:  # the numpy functions above do not need it
    torch = None

if torch is not None:
    __all__ += ["LskdKDLoss", "kd_loss_torch"]

    class LskdKDLoss(torch.autograd.Function):
        """The KD loss as an autograd Function on CPU tensors (float32 or float64, 2-D).

        LskdKDLoss.apply(student, teacher, temperature=2.0, standardize=True, ddof=1,
                         eps=1e-7, reduction="batchmean", scale_by_t2=True)

        The forward computes the loss and, for the inputs that require grad, the gradients
        (one fused pass); the backward scales them by grad_output (row by row with
        reduction="none"). A tensor without contiguous rows is copied once with .contiguous().
        Only first derivatives are available: a double backward raises a RuntimeError.
        """

        @staticmethod
        def forward(ctx, student, teacher, temperature=2.0, standardize=True, ddof=1, eps=1e-7,
                    reduction="batchmean", scale_by_t2=True):
            for name, tensor in (("student", student), ("teacher", teacher)):
                if not isinstance(tensor, torch.Tensor):
                    raise TypeError(f"'{name}' must be a torch.Tensor")
                if tensor.device.type != "cpu":
                    raise ValueError(f"'{name}' is on {tensor.device}; LskdKDLoss runs on the "
                                     "CPU (move it with .cpu())")
            student_data = student.detach().contiguous()
            teacher_data = teacher.detach().contiguous()
            grad_student = torch.empty_like(student_data) if ctx.needs_input_grad[0] else None
            grad_teacher = torch.empty_like(teacher_data) if ctx.needs_input_grad[1] else None
            loss = kd_loss(student_data.numpy(), teacher_data.numpy(), temperature=temperature,
                           standardize=standardize, ddof=ddof, eps=eps, reduction=reduction,
                           scale_by_t2=scale_by_t2,
                           grad_student=None if grad_student is None else grad_student.numpy(),
                           grad_teacher=None if grad_teacher is None else grad_teacher.numpy())
            ctx.per_row = reduction == "none"
            # The inputs only tie a gradient asked for with create_graph=True to them (backward).
            ctx.save_for_backward(grad_student, grad_teacher, student, teacher)
            return torch.as_tensor(loss, dtype=student.dtype)

        @staticmethod
        def backward(ctx, grad_output):
            grad_student, grad_teacher, student, teacher = ctx.saved_tensors
            # Rows are independent: a row's loss depends only on that row's logits, so the
            # weighted sum's gradient is each row's gradient times its weight.
            with torch.no_grad():
                scale = grad_output.unsqueeze(1) if ctx.per_row else grad_output
                gradients = [None if gradient is None else gradient * scale
                             for gradient in (grad_student, grad_teacher)]
            # These are saved first-order gradients, scaled: they have no second-order term.
            # When a graph of them is asked for (create_graph=True, for a double backward such
            # as a gradient penalty), they are tied to the inputs through a node whose backward
            # raises, rather than left constant, which would silently drop that term.
            # (torch.autograd.function.once_differentiable does so only when grad_output
            # itself requires grad, so it would miss the common case.)
            if torch.is_grad_enabled():
                gradients = [None if gradient is None
                             else _FirstOrderOnly.apply(gradient, student, teacher, grad_output)
                             for gradient in gradients]
            return (*gradients, None, None, None, None, None, None)

    class _FirstOrderOnly(torch.autograd.Function):
        """The identity on a gradient from LskdKDLoss.backward, made to depend on the tensors it
        was computed from (`inputs`), with a backward that raises: differentiating it again is
        refused instead of giving a gradient without its second-order term."""

        @staticmethod
        def forward(ctx, gradient, *inputs):
            return gradient.clone()

        @staticmethod
        def backward(ctx, *grad_outputs):
            raise RuntimeError("LskdKDLoss has no second derivative: its gradient cannot be "
                               "differentiated again (double backward through "
                               "torch.autograd.grad(..., create_graph=True))")

    def kd_loss_torch(student, teacher, *, temperature=2.0, standardize=True, ddof=1, eps=1e-7,
                      reduction="batchmean", scale_by_t2=True):
        """LskdKDLoss.apply with keyword options."""
        return LskdKDLoss.apply(student, teacher, temperature, standardize, ddof, eps, reduction,
                                scale_by_t2)
