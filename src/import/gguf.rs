//! GGUF files (llama.cpp's single-file models, version 2 and 3): the header, the typed metadata,
//! the tensor directory, and each tensor's bytes read on demand and decoded to f32 on the host
//! ([`super::ggml`]). Every count, length and extent is checked against the file's size before
//! anything is allocated for it, so a damaged or hostile file is an error naming what is wrong,
//! never a panic or an allocation of its claimed size.
//!
//! Layout (little-endian): "GGUF", version u32, tensor count u64, metadata count u64; each
//! metadata entry a key string, a value type u32 and the value (an array: element type u32,
//! count u64, the elements); each tensor a name string, its dimension count u32, the dimensions
//! u64 (the fastest-varying first, ggml's `ne`), its ggml type u32 and its offset u64 from the
//! data section; then padding to the alignment (`general.alignment`, 32 by default) and the data.
//! A string is a u64 length and that many bytes of UTF-8.

use crate::error::{Error, Result};
use crate::quant::ggml::GgmlType;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// An unsigned integer of any width, or a non-negative signed one.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// A float of either width (an f64 rounded).
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Value::F32(v) => Some(v),
            Value::F64(v) => Some(v as f32),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) => Some(v),
            _ => None,
        }
    }

    /// The type's name as GGUF spells it, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "uint8",
            Value::I8(_) => "int8",
            Value::U16(_) => "uint16",
            Value::I16(_) => "int16",
            Value::U32(_) => "uint32",
            Value::I32(_) => "int32",
            Value::F32(_) => "float32",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::U64(_) => "uint64",
            Value::I64(_) => "int64",
            Value::F64(_) => "float64",
        }
    }
}

/// One tensor of the directory.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml's `ne`: the fastest-varying dimension first (a (rows, cols) matrix is [cols, rows]).
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// From the start of the file (the data section's start plus the tensor's offset).
    pub start: u64,
    /// Bytes its blocks take.
    pub bytes: u64,
}

impl TensorInfo {
    pub fn numel(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The shape in PyTorch's order, slowest dimension first ((rows, cols) for a matrix).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// What a GGUF file starts with.
pub const MAGIC: &[u8; 4] = b"GGUF";

/// A GGUF file's header, metadata and tensor directory; the data stays in the file.
#[derive(Debug)]
pub struct Gguf {
    pub path: PathBuf,
    pub version: u32,
    /// In file order.
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Where the data section starts.
    pub data_start: u64,
}

/// The room reserved for `n` entries a file claims: at most 65 536 ahead of the entries read
/// (each parsed entry consumes bytes of the file, so growth past that is paid for by real data;
/// a claim alone never sizes an allocation beyond a few MiB).
fn claimed(n: u64) -> usize {
    n.min(1 << 16) as usize
}

/// Dimensions a tensor may have (ggml's GGML_MAX_DIMS).
const MAX_DIMS: u32 = 4;
/// Array nesting GGUF writers produce (an array of arrays at most); deeper is refused.
const MAX_NESTING: usize = 2;

/// A value for a message: itself, or an array's length (a vocabulary is 50 000 strings).
fn shown(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("{} elements", a.len()),
        v => format!("{v:?}"),
    }
}

impl Gguf {
    /// Reads and checks the header, metadata and tensor directory of `path`.
    pub fn open(path: &Path) -> Result<Gguf> {
        let file = std::fs::File::open(path).map_err(|error| Error::Io {
            path: path.into(),
            error,
        })?;
        let size = file
            .metadata()
            .map_err(|error| Error::Io {
                path: path.into(),
                error,
            })?
            .len();
        let mut r = Reader {
            inner: std::io::BufReader::new(file),
            at: 0,
            size,
            path,
        };
        let magic = r.bytes_exact(4)?;
        if magic != MAGIC {
            return Err(r.bad(format!(
                "is not a GGUF file (it starts with {magic:02x?}, not \"GGUF\")"
            )));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(r.bad(format!(
                "is GGUF version {version}; wgtrain reads versions 2 and 3"
            )));
        }
        let tensor_count = r.u64()?;
        let kv_count = r.u64()?;
        // each entry takes at least 8 bytes of its own (a key's or a name's length): a count
        // the rest of the file cannot hold is refused before anything is read for it
        for (count, what) in [(tensor_count, "tensors"), (kv_count, "metadata entries")] {
            if count > r.left() / 8 {
                return Err(r.bad(format!(
                    "claims {count} {what}, more than its {} bytes can hold",
                    size
                )));
            }
        }
        let mut metadata = Vec::with_capacity(claimed(kv_count));
        for _ in 0..kv_count {
            let key = r.string()?;
            let kind = r.u32()?;
            let value = r.value(kind, 0).map_err(|e| r.within(&key, e))?;
            metadata.push((key, value));
        }
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => 32,
            Some((_, v)) => match v.as_u64() {
                Some(a) if a.is_power_of_two() => a,
                _ => {
                    return Err(r.bad(format!(
                        "general.alignment is {v:?}; it must be a power of two"
                    )))
                }
            },
        };
        let mut entries = Vec::with_capacity(claimed(tensor_count));
        for _ in 0..tensor_count {
            let name = r.string()?;
            let n_dims = r.u32()?;
            if n_dims > MAX_DIMS {
                return Err(r.bad(format!(
                    "tensor {name:?} has {n_dims} dimensions; GGUF allows at most {MAX_DIMS}"
                )));
            }
            let dims = (0..n_dims).map(|_| r.u64()).collect::<Result<Vec<_>>>()?;
            let ggml_type = GgmlType::from_id(r.u32()?);
            let offset = r.u64()?;
            entries.push((name, dims, ggml_type, offset));
        }
        let data_start = r.at.next_multiple_of(alignment);
        let mut tensors = Vec::with_capacity(entries.len());
        for (name, dims, ggml_type, offset) in entries {
            let info = r.tensor(name, dims, ggml_type, offset, data_start, alignment)?;
            if tensors.iter().any(|t: &TensorInfo| t.name == info.name) {
                return Err(r.bad(format!("names tensor {:?} twice", info.name)));
            }
            tensors.push(info);
        }
        Ok(Gguf {
            path: path.into(),
            version,
            metadata,
            tensors,
            alignment,
            data_start,
        })
    }

    /// The metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The metadata value of `key`, which the caller needs: an error naming it when absent.
    pub fn require(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .ok_or_else(|| self.bad(format!("has no metadata {key:?}")))
    }

    /// A non-negative integer the caller needs.
    pub fn require_u64(&self, key: &str) -> Result<u64> {
        self.require_as(key, "a non-negative integer", Value::as_u64)
    }

    /// A float the caller needs.
    pub fn require_f32(&self, key: &str) -> Result<f32> {
        self.require_as(key, "a float", Value::as_f32)
    }

    /// A string the caller needs.
    pub fn require_str(&self, key: &str) -> Result<&str> {
        self.require_as(key, "a string", Value::as_str)
    }

    /// Metadata `key` as `get` reads it; an error naming the key, its type and `what` was
    /// wanted when it is absent or of another type.
    fn require_as<'a, T>(
        &'a self,
        key: &str,
        what: &str,
        get: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<T> {
        let v = self.require(key)?;
        get(v).ok_or_else(|| {
            self.bad(format!(
                "metadata {key:?} is a {} ({}), not {what}",
                v.type_name(),
                shown(v)
            ))
        })
    }

    /// The model's architecture (`general.architecture`: "llama", "gpt2", …).
    pub fn architecture(&self) -> Result<&str> {
        self.require_str("general.architecture")
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The tensor's bytes as stored (its blocks).
    pub fn read_raw(&self, t: &TensorInfo) -> Result<Vec<u8>> {
        let io = |error| Error::Io {
            path: self.path.clone(),
            error,
        };
        let mut f = std::fs::File::open(&self.path).map_err(io)?;
        f.seek(SeekFrom::Start(t.start)).map_err(io)?;
        let mut bytes = vec![0; t.bytes as usize];
        f.read_exact(&mut bytes).map_err(io)?;
        Ok(bytes)
    }

    /// The tensor decoded to f32, in storage order (ggml's: the first dimension fastest, so a
    /// (rows, cols) matrix row by row). An error names a type wgtrain does not decode.
    pub fn dequantize(&self, t: &TensorInfo) -> Result<Vec<f32>> {
        let raw = self.read_raw(t)?;
        t.ggml_type
            .dequantize(&raw, t.numel() as usize)
            .map_err(|reason| self.bad(format!("tensor {:?}: {reason}", t.name)))
    }

    fn bad(&self, reason: String) -> Error {
        Error::Format {
            path: self.path.clone(),
            reason,
        }
    }
}

/// The header's reader: every read checked against the bytes left in the file.
struct Reader<'p, R> {
    inner: R,
    at: u64,
    size: u64,
    path: &'p Path,
}

impl<R: Read> Reader<'_, R> {
    fn left(&self) -> u64 {
        self.size - self.at
    }

    fn bad(&self, reason: String) -> Error {
        Error::Format {
            path: self.path.into(),
            reason,
        }
    }

    /// `e` as an error about metadata `key`.
    fn within(&self, key: &str, e: Error) -> Error {
        match e {
            Error::Format { path, reason } => Error::Format {
                path,
                reason: format!("metadata {key:?}: {reason}"),
            },
            e => e,
        }
    }

    fn bytes_exact(&mut self, n: u64) -> Result<Vec<u8>> {
        if n > self.left() {
            return Err(self.bad(format!(
                "ends at byte {} while {n} more were expected at byte {} (truncated?)",
                self.size, self.at
            )));
        }
        let mut b = vec![0; n as usize];
        self.inner.read_exact(&mut b).map_err(|error| Error::Io {
            path: self.path.into(),
            error,
        })?;
        self.at += n;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.bytes_exact(N as u64)?.try_into().expect("N bytes"))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String> {
        let n = self.u64()?;
        let at = self.at;
        let bytes = self.bytes_exact(n)?;
        String::from_utf8(bytes)
            .map_err(|_| self.bad(format!("the string at byte {at} is not UTF-8")))
    }

    /// A value of GGUF type `kind` (`depth`: arrays around it).
    fn value(&mut self, kind: u32, depth: usize) -> Result<Value> {
        Ok(match kind {
            0 => Value::U8(self.array::<1>()?[0]),
            1 => Value::I8(self.array::<1>()?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array()?)),
            3 => Value::I16(i16::from_le_bytes(self.array()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.array()?)),
            6 => Value::F32(f32::from_le_bytes(self.array()?)),
            7 => match self.array::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.bad(format!("a bool is {b}, not 0 or 1"))),
            },
            8 => Value::String(self.string()?),
            9 => {
                if depth >= MAX_NESTING {
                    return Err(self.bad(format!(
                        "arrays nested {} deep; wgtrain reads {MAX_NESTING}",
                        depth + 1
                    )));
                }
                let inner = self.u32()?;
                let n = self.u64()?;
                // the smallest element is one byte: a count the file cannot hold is refused
                // before anything is read for it
                if n > self.left() {
                    return Err(self.bad(format!(
                        "an array claims {n} elements, more than the {} bytes left",
                        self.left()
                    )));
                }
                let mut v = Vec::with_capacity(claimed(n));
                for _ in 0..n {
                    v.push(self.value(inner, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.array()?)),
            12 => Value::F64(f64::from_le_bytes(self.array()?)),
            k => return Err(self.bad(format!("unknown value type {k}"))),
        })
    }

    /// A directory entry checked: its element count, its type's block size, its extent inside
    /// the file and its alignment.
    fn tensor(
        &self,
        name: String,
        dims: Vec<u64>,
        ggml_type: GgmlType,
        offset: u64,
        data_start: u64,
        alignment: u64,
    ) -> Result<TensorInfo> {
        let numel = dims
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .ok_or_else(|| self.bad(format!("tensor {name:?}: dimensions {dims:?} overflow")))?;
        let bytes = ggml_type
            .bytes_for(numel)
            .map_err(|reason| self.bad(format!("tensor {name:?} {dims:?}: {reason}")))?;
        if offset % alignment != 0 {
            return Err(self.bad(format!(
                "tensor {name:?}: offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        let start = data_start.checked_add(offset);
        match start.and_then(|s| s.checked_add(bytes)) {
            Some(end) if end <= self.size => Ok(TensorInfo {
                name,
                dims,
                ggml_type,
                start: data_start + offset,
                bytes,
            }),
            _ => Err(self.bad(format!(
                "tensor {name:?} ({} bytes of {}) at data offset {offset} ends past the \
                 file's {} bytes (truncated?)",
                bytes,
                ggml_type.name(),
                self.size
            ))),
        }
    }
}
