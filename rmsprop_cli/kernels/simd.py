"""Vectors of LANES floats as a Numba value type, for the CPU kernels' register tiles.

Why: LLVM vectorises a loop over an array, but it keeps the array in memory,
so a dot product or a row of outputs built up over many inputs costs a load
and a store of its accumulator per multiply-add, and a row of outputs cannot
stay in registers across the loop over the inputs that feed it.  A value of
type `f32v` is an LLVM vector (<LANES x float>; f64v for tests in float64): it lives in registers (one
512-bit register with AVX-512, two with AVX2, four with NEON; LLVM splits it
where the machine's registers are narrower), so a kernel that holds a few of
them as loop variables keeps a tile of accumulators in registers, which is
what a matrix product needs to run near the machine's multiply-add peak.

Only what the kernels need: load and store LANES consecutive values of a
float array (all or the first n), a scalar broadcast, +, -, * (with a scalar on either side), the sum of
the lanes, and the indices of the non-zero lanes written compactly
(AVX-512's compress store; LLVM expands it on other machines).  Every
operation carries the fast-math flags of config.FASTMATH, so a * b + c is
fused into one multiply-add as in the rest of the kernels.
"""

import operator

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model

from ..config import FASTMATH



def _lanes() -> int:
    """16 float32 lanes (one register) where the kernels are compiled for AVX-512,
    else 8 (one AVX2 register, two NEON ones).  The register tiles hold up to 16
    vectors of sums: as 16-lane vectors on AVX2 they would need 32 of its 16
    registers, and the recipe ran 24% slower on one thread (0.44 s against 0.36 s
    an epoch, compiled for Haswell).  Follows Numba's own choice of target
    (NUMBA_CPU_NAME, NUMBA_CPU_FEATURES), as its cache does."""
    from numba.core import config
    from numba.core.codegen import get_host_cpu_features

    # As numba.core.codegen: the host's features unless NUMBA_CPU_FEATURES names others.
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    return 16 if "+avx512f" in features.split(",") else 8


LANES = _lanes()

_FLAGS = tuple(sorted(FASTMATH))
_LLVM = {types.float32: ir.FloatType(), types.float64: ir.DoubleType()}


class Vec(types.Type):
    """LANES values of one float type (float32 in training; float64 where a test
    runs the kernels in double precision, as finite differences do)."""

    def __init__(self, dtype):
        self.dtype = dtype
        super().__init__(name=f"{dtype}x{LANES}")


f32v, f64v = Vec(types.float32), Vec(types.float64)
VECS = {types.float32: f32v, types.float64: f64v}


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(_LLVM[fe_type.dtype], LANES))


def _vec_of(ary):
    """The vector type of a C-contiguous float array (anything else fails to compile, with why)."""
    if not (isinstance(ary, types.Array) and ary.dtype in VECS and ary.layout == "C"):
        raise TypeError(f"simd needs a C-contiguous float32 or float64 array, got {ary}")
    return VECS[ary.dtype]


def _llvm(vec):
    return ir.VectorType(_LLVM[vec.dtype], LANES)


@intrinsic
def load(typingctx, ary, index):
    """The LANES values of ary's flat data from index on (any alignment)."""
    vec = _vec_of(ary)

    def codegen(context, builder, sig, args):
        ptr = _addr(context, builder, sig, args)
        return builder.load(builder.bitcast(ptr, _llvm(vec).as_pointer()), align=ary.dtype.bitwidth // 8)

    return vec(ary, index), codegen


@intrinsic
def store(typingctx, ary, index, value):
    """ary's flat data[index:index + LANES] = value."""
    vec = _vec_of(ary)
    if value != vec:
        return None

    def codegen(context, builder, sig, args):
        ptr = _addr(context, builder, sig, args)
        builder.store(args[2], builder.bitcast(ptr, _llvm(vec).as_pointer()), align=ary.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(ary, index, value), codegen


def _addr(context, builder, sig, args):
    arr = context.make_array(sig.args[0])(context, builder, args[0])
    return builder.gep(arr.data, [context.cast(builder, args[1], sig.args[1], types.intp)])


def _splat(builder, x, vtype):
    undef = ir.Constant(vtype, ir.Undefined)
    one = builder.insert_element(undef, x, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))


@intrinsic
def splat_like(typingctx, ary, x):
    """A vector of ary's float type with x in every lane."""
    vec = _vec_of(ary)
    if not isinstance(x, (types.Float, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        return _splat(builder, context.cast(builder, args[1], sig.args[1], vec.dtype), _llvm(vec))

    return vec(ary, x), codegen


@intrinsic
def _splat_as(typingctx, vec, x):
    """A vector of vec's type with x in every lane."""
    def codegen(context, builder, sig, args):
        return _splat(builder, context.cast(builder, args[1], sig.args[1], vec.dtype), _llvm(vec))

    return vec(vec, x), codegen


def _binary(name):
    @intrinsic
    def op(typingctx, a, b):
        if not isinstance(a, Vec) or a != b:
            return None

        def codegen(context, builder, sig, args):
            return getattr(builder, name)(args[0], args[1], flags=_FLAGS)

        return a(a, b), codegen

    return op


vadd, vsub, vmul = _binary("fadd"), _binary("fsub"), _binary("fmul")


def _operator(op, vop):
    @overload(op)
    def impl(a, b):
        if isinstance(a, Vec) and a == b:
            return lambda a, b: vop(a, b)
        if isinstance(a, Vec) and isinstance(b, (types.Float, types.Integer)):
            return lambda a, b: vop(a, _splat_as(a, b))
        if isinstance(b, Vec) and isinstance(a, (types.Float, types.Integer)):
            return lambda a, b: vop(_splat_as(b, a), b)
        return None


for _op, _vop in ((operator.add, vadd), (operator.sub, vsub), (operator.mul, vmul)):
    _operator(_op, _vop)


@intrinsic
def total(typingctx, vec):
    """The sum of the lanes (in the fixed order of LLVM's reduction tree)."""
    if not isinstance(vec, Vec):
        return None

    def codegen(context, builder, sig, args):
        elt = _LLVM[vec.dtype]
        suffix = "f32" if vec.dtype == types.float32 else "f64"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(elt, [elt, _llvm(vec)]),
                                            f"llvm.vector.reduce.fadd.v{LANES}{suffix}")
        return builder.call(fn, [ir.Constant(elt, -0.0), args[0]], fastmath=_FLAGS)

    return vec.dtype(vec), codegen


@intrinsic
def nonzero_lanes(typingctx, ary, index, base, out, count):
    """Write base + lane for every lane of ary's flat data[index:index + LANES] that is
    not 0 (NaN counts as non-zero; ary is float or uint8) to out[count:], in lane order; returns the new count.
    All LANES slots from out[count] on are written (those past the new count with
    anything), so out needs room for them."""
    byte = isinstance(ary, types.Array) and ary.dtype == types.uint8 and ary.layout == "C"
    vec = None if byte else _vec_of(ary)
    if not (isinstance(out, types.Array) and out.dtype == types.int32 and out.layout == "C"):
        raise TypeError(f"nonzero_lanes writes to a C-contiguous int32 array, got {out}")

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        ivec, mvec = ir.VectorType(i32, LANES), ir.VectorType(ir.IntType(1), LANES)
        ptr = _addr(context, builder, sig, args)
        if byte:   # uint8 pixels
            bvec = ir.VectorType(ir.IntType(8), LANES)
            values = builder.load(builder.bitcast(ptr, bvec.as_pointer()), align=1)
            mask = builder.icmp_unsigned("!=", values, ir.Constant(bvec, [0] * LANES))
        else:
            values = builder.load(builder.bitcast(ptr, _llvm(vec).as_pointer()), align=ary.dtype.bitwidth // 8)
            mask = builder.fcmp_unordered("!=", values, ir.Constant(_llvm(vec), [0.0] * LANES))
        base = builder.trunc(context.cast(builder, args[2], sig.args[2], types.int64), i32)
        idx = builder.add(_splat(builder, base, ivec), ir.Constant(ivec, list(range(LANES))))
        count = context.cast(builder, args[4], sig.args[4], types.int64)
        dest = builder.gep(context.make_array(sig.args[3])(context, builder, args[3]).data, [count])
        # Compressed in a register, then stored whole: AVX-512's compress straight to memory
        # is microcoded on AMD's Zen 4 and 5, and took 45 us of a 100 us training step.
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ivec, [ivec, mvec, ivec]),
                                            f"llvm.experimental.vector.compress.v{LANES}i32")
        packed = builder.call(fn, [idx, mask, ir.Constant(ivec, ir.Undefined)])
        builder.store(packed, builder.bitcast(dest, ivec.as_pointer()), align=4)
        bits = builder.bitcast(mask, ir.IntType(LANES))
        ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(LANES), [ir.IntType(LANES)]),
                                               f"llvm.ctpop.i{LANES}")
        n = builder.zext(builder.call(ctpop, [bits]), ir.IntType(64))
        return builder.add(count, n)

    return types.int64(ary, index, base, out, count), codegen


def _lane_mask(builder, n):
    """<LANES x i1>: lane < n (n an int64)."""
    i32 = ir.IntType(32)
    ivec = ir.VectorType(i32, LANES)
    limit = _splat(builder, builder.trunc(n, i32), ivec)
    return builder.icmp_signed("<", ir.Constant(ivec, list(range(LANES))), limit)


@intrinsic
def load_first(typingctx, ary, index, n):
    """load, of the first n lanes only (n < LANES: the rest are 0 and their memory is not touched)."""
    vec = _vec_of(ary)

    def codegen(context, builder, sig, args):
        ptr = _addr(context, builder, sig, args)
        mask = _lane_mask(builder, context.cast(builder, args[2], sig.args[2], types.int64))
        vty = _llvm(vec)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vty, [ptr.type, ir.IntType(32), mask.type, vty]),
            f"llvm.masked.load.v{LANES}{_suffix(vec)}.p0")
        return builder.call(fn, [ptr, ir.Constant(ir.IntType(32), ary.dtype.bitwidth // 8), mask,
                                 ir.Constant(vty, [0.0] * LANES)])

    return vec(ary, index, n), codegen


@intrinsic
def store_first(typingctx, ary, index, value, n):
    """store, of the first n lanes only (memory past them is not touched)."""
    vec = _vec_of(ary)
    if value != vec:
        return None

    def codegen(context, builder, sig, args):
        ptr = _addr(context, builder, sig, args)
        mask = _lane_mask(builder, context.cast(builder, args[3], sig.args[3], types.int64))
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [_llvm(vec), ptr.type, ir.IntType(32), mask.type]),
            f"llvm.masked.store.v{LANES}{_suffix(vec)}.p0")
        builder.call(fn, [args[2], ptr, ir.Constant(ir.IntType(32), ary.dtype.bitwidth // 8), mask])
        return context.get_dummy_value()

    return types.none(ary, index, value, n), codegen


def _suffix(vec):
    return "f32" if vec.dtype == types.float32 else "f64"


@intrinsic
def trailing_zeros(typingctx, word):
    """The number of zero bits below the lowest set bit of a uint64 (64 for 0): one
    instruction (tzcnt), where a loop over the bits would branch on each."""
    if word != types.uint64:
        return None

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, [i64, ir.IntType(1)]),
                                            "llvm.cttz.i64")
        return builder.call(fn, [args[0], ir.Constant(ir.IntType(1), 0)])

    return types.int64(word), codegen


@intrinsic
def prefetch(typingctx, ary, index):
    """Ask for the cache line holding ary's flat element `index` (into all cache levels):
    the next batch's images are fetched from memory while this batch computes."""
    if not isinstance(ary, types.Array):
        return None

    def codegen(context, builder, sig, args):
        ptr = builder.bitcast(_addr(context, builder, sig, args), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.none(ary, index), codegen
