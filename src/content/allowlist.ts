/**
 * The globals a pickle may import and still be called *safe*: modelled on PyTorch's `weights_only`
 * unpickler (torch/_weights_only_unpickler.py, the default of `torch.load` since 2.6) plus numpy's array
 * reconstruction. An allow-list, matched exactly on `module.name`: anything else — `os`, `posix`,
 * `builtins.eval`, a model's own classes — is unsafe unless a site widens the list itself
 * (`--allow-global`, a policy file). Unresolvable operands (`<…>`) can never be allowed.
 */

const STORAGES = [
  'Double', 'Float', 'Half', 'BFloat16', 'Long', 'Int', 'Short', 'Char', 'Byte', 'Bool',
  'ComplexDouble', 'ComplexFloat', 'QUInt8', 'QInt8', 'QInt32', 'QUInt4x2', 'QUInt2x4',
].map((t) => `torch.${t}Storage`);

const DTYPES = [
  'float32', 'float', 'float64', 'double', 'float16', 'half', 'bfloat16', 'complex32', 'complex64', 'cfloat',
  'complex128', 'cdouble', 'uint8', 'uint16', 'uint32', 'uint64', 'int8', 'int16', 'short', 'int32', 'int',
  'int64', 'long', 'bool', 'quint8', 'qint8', 'qint32', 'quint4x2', 'quint2x4',
  'float8_e4m3fn', 'float8_e5m2', 'float8_e4m3fnuz', 'float8_e5m2fnuz', 'float8_e8m0fnu', 'float4_e2m1fn_x2',
  'bits1x8', 'bits2x4', 'bits4x2', 'bits8', 'bits16',
].map((t) => `torch.${t}`);

const REBUILDS = [
  '_rebuild_tensor', '_rebuild_tensor_v2', '_rebuild_tensor_v3', '_rebuild_sparse_tensor', '_rebuild_meta_tensor_no_storage',
  '_rebuild_nested_tensor', '_rebuild_parameter', '_rebuild_parameter_with_state', '_rebuild_qtensor',
  '_rebuild_wrapper_subclass', '_rebuild_device_tensor_from_cpu_tensor',
].map((f) => `torch._utils.${f}`);

export const DEFAULT_ALLOWED_GLOBALS: ReadonlySet<string> = new Set([
  'collections.OrderedDict',
  'collections.Counter',
  'builtins.set',
  'builtins.frozenset',
  'builtins.bytearray',
  'builtins.bytes',
  'builtins.complex',
  'builtins.slice',
  'builtins.range',
  '_codecs.encode',
  'torch._tensor._rebuild_from_type_v2',
  'torch.nn.parameter.Parameter',
  'torch.serialization._get_layout',
  'torch.Size',
  'torch.device',
  'torch.Tensor',
  'torch.UntypedStorage',
  'torch.storage.UntypedStorage',
  'torch.storage.TypedStorage',
  'torch.strided',
  'torch.sparse_coo',
  'torch.sparse_csr',
  'torch.sparse_csc',
  'torch.sparse_bsr',
  'torch.sparse_bsc',
  'torch._mkldnn',
  'torch.contiguous_format',
  'torch.channels_last',
  'torch.channels_last_3d',
  'torch.preserve_format',
  'torch.per_tensor_affine',
  'torch.per_channel_affine',
  'torch.per_tensor_symmetric',
  'torch.per_channel_symmetric',
  'torch.per_channel_affine_float_qparams',
  ...STORAGES,
  ...DTYPES,
  ...REBUILDS,
  // numpy array reconstruction (numpy 1.x and 2.x module names)
  'numpy.core.multiarray._reconstruct',
  'numpy._core.multiarray._reconstruct',
  'numpy.core.multiarray.scalar',
  'numpy._core.multiarray.scalar',
  'numpy.ndarray',
  'numpy.dtype',
  ...['Bool', 'Int8', 'UInt8', 'Int16', 'UInt16', 'Int32', 'UInt32', 'Int64', 'UInt64', 'Float16', 'Float32', 'Float64', 'Complex64', 'Complex128', 'Bytes', 'Str', 'Object', 'LongDouble', 'CLongDouble'].map(
    (t) => `numpy.dtypes.${t}DType`,
  ),
]);

/** A `module.name` a site may add: dotted identifiers, nothing else (no wildcards, no `<…>`). */
export const GLOBAL_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$/;

export interface AllowList {
  has(global: string): boolean;
}

/** The default list widened by a site's own names (already validated with GLOBAL_NAME_RE). */
export function allowList(extra: Iterable<string> = []): AllowList {
  const added = new Set(extra);
  return { has: (g) => DEFAULT_ALLOWED_GLOBALS.has(g) || added.has(g) };
}
