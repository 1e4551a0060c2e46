//! A small pickle virtual machine: the opcodes of protocols 2-5 that
//! `torch.save` emits for a state dict (see Lib/pickletools.py for the
//! opcode reference).
//!
//! Unlike Python's `pickle.load` nothing here imports or runs code: every
//! global, call, `BUILD` and persistent id is handed to a [`Host`], which
//! refuses what it does not understand. Malformed input yields an error
//! string, never a panic.
//!
//! One job in one file, though long: the VM's stack, memo and mark handling
//! are shared by every opcode, and splitting the opcode table would only
//! scatter one `match` over several files.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

/// A Python global (`module.name`) the host agreed to know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Global {
    pub module: String,
    pub name: String,
}

impl fmt::Display for Global {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.module, self.name)
    }
}

pub(crate) type Items<E> = Rc<RefCell<Vec<Value<E>>>>;
pub(crate) type Pairs<E> = Vec<(Value<E>, Value<E>)>;

/// An unpickled object. Everything is reference-counted so that `BINGET`
/// and `DUP` are O(1) whatever the input; lists and dicts are shared and
/// mutable because pickle memoizes them before filling them.
#[derive(Clone)]
pub(crate) enum Value<E> {
    None,
    // The torch host only needs to know these are not weights, but a
    // decoded pickle that dropped their values would be a trap.
    Bool(#[allow(dead_code)] bool),
    Int(i64),
    Float(#[allow(dead_code)] f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<[Value<E>]>),
    List(Items<E>),
    /// Insertion-ordered; a repeated key is kept twice and the reader of
    /// the dict decides (Python would keep the last value).
    Dict(Rc<RefCell<Pairs<E>>>),
    Global(Rc<Global>),
    /// An object only the host understands (for torch: storages, tensors).
    Ext(E),
}

/// Drops nested containers with a worklist: a pickle of a few hundred KB
/// can nest tuples a million deep (one TUPLE1 byte per level), which the
/// default recursive drop would turn into a stack overflow.
impl<E> Drop for Value<E> {
    fn drop(&mut self) {
        let mut pending = Vec::new();
        self.take_children(&mut pending);
        while let Some(mut value) = pending.pop() {
            value.take_children(&mut pending);
        }
    }
}

impl<E> Value<E> {
    /// Moves out the children of a container only this value holds.
    fn take_children(&mut self, out: &mut Vec<Value<E>>) {
        match self {
            Value::Tuple(items) => {
                if let Some(items) = Rc::get_mut(items) {
                    out.extend(items.iter_mut().map(|v| std::mem::replace(v, Value::None)));
                }
            }
            Value::List(items) => {
                if let Some(items) = Rc::get_mut(items) {
                    out.append(items.get_mut());
                }
            }
            Value::Dict(pairs) => {
                if let Some(pairs) = Rc::get_mut(pairs) {
                    for (key, value) in pairs.get_mut().drain(..) {
                        out.push(key);
                        out.push(value);
                    }
                }
            }
            _ => {}
        }
    }

    /// A short name for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Ext(_) => "object",
        }
    }

    pub fn new_dict(items: Pairs<E>) -> Self {
        Value::Dict(Rc::new(RefCell::new(items)))
    }
}

/// What gives meaning to the parts of a pickle that name Python code.
pub(crate) trait Host {
    type Ext: Clone;

    /// Accepts or refuses the global `module.name` (opcodes GLOBAL and
    /// STACK_GLOBAL); refusing unknown globals is what keeps loading safe.
    fn find_class(&mut self, module: &str, name: &str) -> Result<(), String>;

    /// Resolves a persistent id (BINPERSID).
    fn persistent_load(&mut self, pid: Value<Self::Ext>) -> Result<Value<Self::Ext>, String>;

    /// Calls `callable(*args)` (REDUCE, NEWOBJ).
    fn call(
        &mut self,
        callable: &Global,
        args: &[Value<Self::Ext>],
    ) -> Result<Value<Self::Ext>, String>;

    /// Applies `obj.__setstate__(state)` (BUILD) and returns the object.
    fn build(
        &mut self,
        obj: Value<Self::Ext>,
        state: Value<Self::Ext>,
    ) -> Result<Value<Self::Ext>, String>;
}

/// Runs the pickle in `data` to its STOP opcode and returns the object it
/// built.
pub(crate) fn load<H: Host>(data: &[u8], host: &mut H) -> Result<Value<H::Ext>, String> {
    Machine {
        input: Input { data, pos: 0 },
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        host,
    }
    .run()
}

struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.data.len())
            .ok_or_else(|| {
                format!(
                    "pickle data ends early: {n} bytes wanted at byte {} of {}",
                    self.pos,
                    self.data.len()
                )
            })?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A length prefix, which may not promise more bytes than remain.
    fn len_u64(&mut self, len: u64) -> Result<usize, String> {
        usize::try_from(len)
            .ok()
            .filter(|&n| n <= self.data.len() - self.pos)
            .ok_or_else(|| {
                format!(
                    "pickle length {len} at byte {} runs past the end of the data",
                    self.pos
                )
            })
    }

    /// A text argument terminated by `\n` (GLOBAL, PUT, GET).
    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or_else(|| {
            format!(
                "pickle data ends inside a text argument at byte {}",
                self.pos
            )
        })?;
        let line = std::str::from_utf8(&rest[..n])
            .map_err(|_| format!("pickle text argument at byte {} is not UTF-8", self.pos))?;
        self.pos += n + 1;
        Ok(line)
    }

    fn utf8(&mut self, n: usize) -> Result<Rc<str>, String> {
        let at = self.pos;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(Rc::from)
            .map_err(|_| format!("pickle string at byte {at} is not valid UTF-8"))
    }
}

struct Machine<'a, 'h, H: Host> {
    input: Input<'a>,
    stack: Vec<Value<H::Ext>>,
    /// Stack heights at each MARK; the items above the top mark belong to
    /// the next mark-consuming opcode and may not be popped by others.
    marks: Vec<usize>,
    memo: HashMap<u32, Value<H::Ext>>,
    host: &'h mut H,
}

impl<H: Host> Machine<'_, '_, H> {
    fn run(mut self) -> Result<Value<H::Ext>, String> {
        loop {
            let at = self.input.pos;
            let Ok(op) = self.input.u8() else {
                return Err("pickle data ends before its STOP opcode".into());
            };
            self.step(op)
                .map_err(|e| format!("{e} (pickle opcode {} at byte {at})", opcode_name(op)))?;
            if op == b'.' {
                return self.pop();
            }
        }
    }

    fn step(&mut self, op: u8) -> Result<(), String> {
        match op {
            // PROTO
            0x80 => {
                let version = self.input.u8()?;
                if version > 5 {
                    return Err(format!("pickle protocol {version} is newer than 5"));
                }
            }
            // FRAME: framing only groups opcodes for buffered readers.
            0x95 => {
                self.input.u64()?;
            }
            // STOP (handled by the caller)
            b'.' => {}
            b'(' => self.marks.push(self.stack.len()),
            // POP
            b'0' => {
                self.pop()?;
            }
            // POP_MARK
            b'1' => {
                self.pop_mark()?;
            }
            // DUP
            b'2' => {
                let top = self.top()?.clone();
                self.stack.push(top);
            }
            b'N' => self.stack.push(Value::None),
            0x88 => self.stack.push(Value::Bool(true)),
            0x89 => self.stack.push(Value::Bool(false)),
            // BININT
            b'J' => {
                let v = self.input.i32()?;
                self.stack.push(Value::Int(v.into()));
            }
            // BININT1
            b'K' => {
                let v = self.input.u8()?;
                self.stack.push(Value::Int(v.into()));
            }
            // BININT2
            b'M' => {
                let v = self.input.u16()?;
                self.stack.push(Value::Int(v.into()));
            }
            // LONG1
            0x8a => {
                let n = self.input.u8()?;
                let v = self.long(n.into())?;
                self.stack.push(Value::Int(v));
            }
            // LONG4
            0x8b => {
                let n = self.input.i32()?;
                let n = u64::try_from(n).map_err(|_| "negative LONG4 length".to_string())?;
                let v = self.long(n)?;
                self.stack.push(Value::Int(v));
            }
            // BINFLOAT: the one big-endian argument in pickle.
            b'G' => {
                let v = f64::from_be_bytes(self.input.array()?);
                self.stack.push(Value::Float(v));
            }
            // SHORT_BINUNICODE
            0x8c => {
                let n = self.input.u8()?;
                let s = self.input.utf8(n.into())?;
                self.stack.push(Value::Str(s));
            }
            // BINUNICODE
            b'X' => {
                let n = self.input.u32()?;
                let n = self.input.len_u64(n.into())?;
                let s = self.input.utf8(n)?;
                self.stack.push(Value::Str(s));
            }
            // BINUNICODE8
            0x8d => {
                let n = self.input.u64()?;
                let n = self.input.len_u64(n)?;
                let s = self.input.utf8(n)?;
                self.stack.push(Value::Str(s));
            }
            // SHORT_BINSTRING
            b'U' => {
                let n = self.input.u8()?;
                self.push_py2_string(n.into())?;
            }
            // BINSTRING
            b'T' => {
                let n = self.input.i32()?;
                let n = u64::try_from(n).map_err(|_| "negative BINSTRING length".to_string())?;
                let n = self.input.len_u64(n)?;
                self.push_py2_string(n)?;
            }
            // SHORT_BINBYTES
            b'C' => {
                let n = self.input.u8()?;
                self.push_bytes(n.into())?;
            }
            // BINBYTES
            b'B' => {
                let n = self.input.u32()?;
                let n = self.input.len_u64(n.into())?;
                self.push_bytes(n)?;
            }
            // BINBYTES8, BYTEARRAY8
            0x8e | 0x96 => {
                let n = self.input.u64()?;
                let n = self.input.len_u64(n)?;
                self.push_bytes(n)?;
            }
            b'}' => self.stack.push(Value::new_dict(Vec::new())),
            b']' => self
                .stack
                .push(Value::List(Rc::new(RefCell::new(Vec::new())))),
            b')' => self.stack.push(Value::Tuple(Rc::from(Vec::new()))),
            // DICT
            b'd' => {
                let items = self.pop_mark()?;
                let pairs = pairs(items)?;
                self.stack.push(Value::new_dict(pairs));
            }
            // LIST
            b'l' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::List(Rc::new(RefCell::new(items))));
            }
            // TUPLE
            b't' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::Tuple(Rc::from(items)));
            }
            // TUPLE1, TUPLE2, TUPLE3
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let items = self.pop_n(n)?;
                self.stack.push(Value::Tuple(Rc::from(items)));
            }
            // APPEND
            b'a' => {
                let item = self.pop()?;
                self.list_top()?.borrow_mut().push(item);
            }
            // APPENDS
            b'e' => {
                let items = self.pop_mark()?;
                self.list_top()?.borrow_mut().extend(items);
            }
            // SETITEM
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.dict_top()?.borrow_mut().push((key, value));
            }
            // SETITEMS
            b'u' => {
                let items = self.pop_mark()?;
                let items = pairs(items)?;
                self.dict_top()?.borrow_mut().extend(items);
            }
            // PUT
            b'p' => {
                let index = self.text_index()?;
                self.memoize(index)?;
            }
            // BINPUT
            b'q' => {
                let index = self.input.u8()?;
                self.memoize(index.into())?;
            }
            // LONG_BINPUT
            b'r' => {
                let index = self.input.u32()?;
                self.memoize(index)?;
            }
            // MEMOIZE
            0x94 => {
                let index = u32::try_from(self.memo.len())
                    .map_err(|_| "pickle memo is full".to_string())?;
                self.memoize(index)?;
            }
            // GET
            b'g' => {
                let index = self.text_index()?;
                self.recall(index)?;
            }
            // BINGET
            b'h' => {
                let index = self.input.u8()?;
                self.recall(index.into())?;
            }
            // LONG_BINGET
            b'j' => {
                let index = self.input.u32()?;
                self.recall(index)?;
            }
            // GLOBAL
            b'c' => {
                let module = self.input.line()?;
                let name = self.input.line()?;
                self.push_global(module, name)?;
            }
            // STACK_GLOBAL
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (&module, &name) {
                    (Value::Str(module), Value::Str(name)) => self.push_global(module, name)?,
                    (module, name) => {
                        return Err(format!(
                            "STACK_GLOBAL wants two strings, got {} and {}",
                            module.kind(),
                            name.kind()
                        ))
                    }
                }
            }
            // REDUCE, NEWOBJ: for the classes a host accepts, `cls.__new__(cls,
            // *args)` and `cls(*args)` build the same thing.
            b'R' | 0x81 => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let value = self.call(&callable, &args)?;
                self.stack.push(value);
            }
            // NEWOBJ_EX
            0x92 => {
                let kwargs = self.pop()?;
                let args = self.pop()?;
                let cls = self.pop()?;
                match &kwargs {
                    Value::Dict(d) if d.borrow().is_empty() => {}
                    other => {
                        return Err(format!(
                            "NEWOBJ_EX with keyword arguments ({})",
                            other.kind()
                        ))
                    }
                }
                let value = self.call(&cls, &args)?;
                self.stack.push(value);
            }
            // BUILD
            b'b' => {
                let state = self.pop()?;
                let obj = self.pop()?;
                let value = self.host.build(obj, state)?;
                self.stack.push(value);
            }
            // BINPERSID
            b'Q' => {
                let pid = self.pop()?;
                let value = self.host.persistent_load(pid)?;
                self.stack.push(value);
            }
            _ => return Err("unsupported opcode".into()),
        }
        Ok(())
    }

    /// The lowest stack index the current opcode may touch.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Value<H::Ext>, String> {
        if self.stack.len() <= self.floor() {
            return Err("stack underflow".into());
        }
        self.stack
            .pop()
            .ok_or_else(|| "stack underflow".to_string())
    }

    fn pop_n(&mut self, n: usize) -> Result<Vec<Value<H::Ext>>, String> {
        let start = self
            .stack
            .len()
            .checked_sub(n)
            .filter(|&start| start >= self.floor())
            .ok_or_else(|| "stack underflow".to_string())?;
        Ok(self.stack.split_off(start))
    }

    fn top(&self) -> Result<&Value<H::Ext>, String> {
        if self.stack.len() <= self.floor() {
            return Err("stack underflow".into());
        }
        self.stack
            .last()
            .ok_or_else(|| "stack underflow".to_string())
    }

    /// Pops everything above the top mark, and the mark.
    fn pop_mark(&mut self) -> Result<Vec<Value<H::Ext>>, String> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| "no MARK to pop to".to_string())?;
        // Pops check the floor, so the stack never shrinks below a mark.
        if mark > self.stack.len() {
            return Err("stack underflow".into());
        }
        Ok(self.stack.split_off(mark))
    }

    fn list_top(&self) -> Result<Items<H::Ext>, String> {
        match self.top()? {
            Value::List(list) => Ok(list.clone()),
            other => Err(format!("appending to a {}, not a list", other.kind())),
        }
    }

    fn dict_top(&self) -> Result<Rc<RefCell<Pairs<H::Ext>>>, String> {
        match self.top()? {
            Value::Dict(dict) => Ok(dict.clone()),
            other => Err(format!("setting an item of a {}, not a dict", other.kind())),
        }
    }

    fn memoize(&mut self, index: u32) -> Result<(), String> {
        let top = self.top()?.clone();
        self.memo.insert(index, top);
        Ok(())
    }

    fn recall(&mut self, index: u32) -> Result<(), String> {
        let value = self
            .memo
            .get(&index)
            .cloned()
            .ok_or_else(|| format!("memo entry {index} was never stored"))?;
        self.stack.push(value);
        Ok(())
    }

    fn text_index(&mut self) -> Result<u32, String> {
        let line = self.input.line()?;
        line.parse().map_err(|_| format!("bad memo index {line:?}"))
    }

    /// LONG1/LONG4: little-endian two's complement of `n` bytes.
    fn long(&mut self, n: u64) -> Result<i64, String> {
        let n = self.input.len_u64(n)?;
        let bytes = self.input.take(n)?;
        if n > 8 {
            return Err(format!("integer of {n} bytes does not fit in 64 bits"));
        }
        let fill = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
            0xff
        } else {
            0
        };
        let mut buf = [fill; 8];
        buf[..n].copy_from_slice(bytes);
        Ok(i64::from_le_bytes(buf))
    }

    /// Python 2 `str`: text if it is UTF-8 (it is ASCII in what torch
    /// writes), bytes otherwise.
    fn push_py2_string(&mut self, n: usize) -> Result<(), String> {
        let bytes = self.input.take(n)?;
        let value = match std::str::from_utf8(bytes) {
            Ok(s) => Value::Str(Rc::from(s)),
            Err(_) => Value::Bytes(Rc::from(bytes)),
        };
        self.stack.push(value);
        Ok(())
    }

    fn push_bytes(&mut self, n: usize) -> Result<(), String> {
        let bytes = self.input.take(n)?;
        self.stack.push(Value::Bytes(Rc::from(bytes)));
        Ok(())
    }

    fn push_global(&mut self, module: &str, name: &str) -> Result<(), String> {
        self.host.find_class(module, name)?;
        self.stack.push(Value::Global(Rc::new(Global {
            module: module.to_string(),
            name: name.to_string(),
        })));
        Ok(())
    }

    fn call(
        &mut self,
        callable: &Value<H::Ext>,
        args: &Value<H::Ext>,
    ) -> Result<Value<H::Ext>, String> {
        let Value::Global(callable) = callable else {
            return Err(format!("calling a {}, not a global", callable.kind()));
        };
        let Value::Tuple(args) = args else {
            return Err(format!(
                "arguments of {callable} are a {}, not a tuple",
                args.kind()
            ));
        };
        self.host.call(callable, args)
    }
}

fn pairs<E>(items: Vec<Value<E>>) -> Result<Pairs<E>, String> {
    if items.len() % 2 != 0 {
        return Err(format!("{} items cannot form key-value pairs", items.len()));
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(key), Some(value)) = (items.next(), items.next()) {
        out.push((key, value));
    }
    Ok(out)
}

fn opcode_name(op: u8) -> String {
    let name = match op {
        0x80 => "PROTO",
        0x95 => "FRAME",
        b'.' => "STOP",
        b'(' => "MARK",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'N' => "NONE",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'M' => "BININT2",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'G' => "BINFLOAT",
        0x8c => "SHORT_BINUNICODE",
        b'X' => "BINUNICODE",
        0x8d => "BINUNICODE8",
        b'U' => "SHORT_BINSTRING",
        b'T' => "BINSTRING",
        b'C' => "SHORT_BINBYTES",
        b'B' => "BINBYTES",
        0x8e => "BINBYTES8",
        0x96 => "BYTEARRAY8",
        b'}' => "EMPTY_DICT",
        b']' => "EMPTY_LIST",
        b')' => "EMPTY_TUPLE",
        b'd' => "DICT",
        b'l' => "LIST",
        b't' => "TUPLE",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        b'a' => "APPEND",
        b'e' => "APPENDS",
        b's' => "SETITEM",
        b'u' => "SETITEMS",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        0x94 => "MEMOIZE",
        b'g' => "GET",
        b'h' => "BINGET",
        b'j' => "LONG_BINGET",
        b'c' => "GLOBAL",
        0x93 => "STACK_GLOBAL",
        b'R' => "REDUCE",
        0x81 => "NEWOBJ",
        0x92 => "NEWOBJ_EX",
        b'b' => "BUILD",
        b'Q' => "BINPERSID",
        // Known to pickle but not produced by torch.save for a state dict.
        b'P' => "PERSID",
        b'I' => "INT",
        b'L' => "LONG",
        b'F' => "FLOAT",
        b'S' => "STRING",
        b'V' => "UNICODE",
        b'i' => "INST",
        b'o' => "OBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return format!("0x{op:02x}"),
    };
    format!("{name} (0x{op:02x})")
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// A host that accepts one global, `m.f`, whose call returns its
    /// argument count, and no persistent ids.
    struct Plain;

    impl Host for Plain {
        type Ext = ();

        fn find_class(&mut self, module: &str, name: &str) -> Result<(), String> {
            if (module, name) == ("m", "f") {
                Ok(())
            } else {
                Err(format!("unsupported global `{module}.{name}`"))
            }
        }

        fn persistent_load(&mut self, _: Value<()>) -> Result<Value<()>, String> {
            Err("no persistent ids".into())
        }

        fn call(&mut self, _: &Global, args: &[Value<()>]) -> Result<Value<()>, String> {
            Ok(Value::Int(args.len() as i64))
        }

        fn build(&mut self, obj: Value<()>, _: Value<()>) -> Result<Value<()>, String> {
            Ok(obj)
        }
    }

    fn run(data: &[u8]) -> Result<Value<()>, String> {
        load(data, &mut Plain)
    }

    #[test]
    fn reads_scalars_strings_and_containers() {
        // pickle.dumps({"a": [1, -2, 70000, 2**40], "b": (1.5, None, True)}, protocol=2)
        let data = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffJp\x11\x01\x00\x8a\x06\x00\x00\x00\x00\x00\x01eX\x01\x00\x00\x00bq\x03G?\xf8\x00\x00\x00\x00\x00\x00N\x88\x87q\x04u.";
        let Ok(root) = run(data) else {
            panic!("load failed")
        };
        let Value::Dict(dict) = &root else {
            panic!("not a dict")
        };
        let dict = dict.borrow();
        assert_eq!(dict.len(), 2);
        let Value::List(list) = &dict[0].1 else {
            panic!("not a list")
        };
        let ints: Vec<i64> = list
            .borrow()
            .iter()
            .map(|v| if let Value::Int(i) = v { *i } else { i64::MIN })
            .collect();
        assert_eq!(ints, [1, -2, 70000, 1 << 40]);
        let Value::Tuple(t) = &dict[1].1 else {
            panic!("not a tuple")
        };
        assert!(matches!(t[0], Value::Float(f) if f == 1.5));
        assert!(matches!(t[1], Value::None));
        assert!(matches!(t[2], Value::Bool(true)));
    }

    #[test]
    fn memo_shares_containers_filled_after_memoizing() {
        // x = []; pickle.dumps([x, x.append(1) or x]): EMPTY_LIST BINPUT 0 … BINGET 0
        let data = b"\x80\x02](]q\x00K\x01ah\x00e.";
        let Ok(root) = run(data) else {
            panic!("load failed")
        };
        let Value::List(outer) = &root else {
            panic!("not a list")
        };
        let outer = outer.borrow();
        let Value::List(second) = &outer[1] else {
            panic!("not a list")
        };
        assert_eq!(second.borrow().len(), 1);
    }

    #[test]
    fn refuses_unknown_globals_and_opcodes() {
        let err = run(b"\x80\x02cos\nsystem\n.").err().unwrap_or_default();
        assert!(err.contains("os.system"), "{err}");
        let err = run(b"\x80\x02I1\n.").err().unwrap_or_default();
        assert!(err.contains("INT"), "{err}");
        assert!(run(b"\x80\x02cm\nf\n)R.").is_ok());
    }

    #[test]
    fn malformed_input_is_an_error() {
        let cases: &[&[u8]] = &[
            b"",
            b"\x80\x02",
            b"0.",
            b"(0.",
            b"K\x01(\x85.",
            b"(1t.",
            b"h\x05.",
            b"X\xff\xff\xff\xff.",
            b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff.",
            b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00.",
            b"K\x01K\x01a.",
            b"}K\x01u.",
            b"\x80\x06.",
            b"T\xff\xff\xff\xff.",
            b"\x8b\xff\xff\xff\xff.",
        ];
        for case in cases {
            assert!(run(case).is_err(), "{case:?} should fail");
        }
    }

    /// Fuzz-style: every truncation of a real pickle, and thousands of
    /// random byte changes to it, give a value or an error, never a panic
    /// or a hang (issue 25).
    #[test]
    fn truncated_and_mutated_pickles_never_panic() {
        // pickle.dumps({"a": [1, -2, 70000, 2**40], "b": (1.5, None, True)}, protocol=2)
        let data: &[u8] = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffJp\x11\x01\x00\x8a\x06\x00\x00\x00\x00\x00\x01eX\x01\x00\x00\x00bq\x03G?\xf8\x00\x00\x00\x00\x00\x00N\x88\x87q\x04u.";
        for end in 0..data.len() {
            assert!(
                run(&data[..end]).is_err(),
                "a pickle cut at {end} has no STOP"
            );
        }
        let mut rng = ChaCha8Rng::seed_from_u64(25);
        for _ in 0..5000 {
            let mut bytes = data.to_vec();
            for _ in 0..rng.random_range(1..=4) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = rng.random();
            }
            let _ = run(&bytes);
        }
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let mut data = b"\x80\x02K\x01".to_vec();
        data.extend(std::iter::repeat_n(0x85u8, 1_000_000));
        data.push(b'.');
        assert!(matches!(run(&data), Ok(Value::Tuple(_))));
    }

    #[test]
    fn self_referencing_list_does_not_hang() {
        // l = []; l.append(l)
        let data = b"]q\x00h\x00a.";
        assert!(matches!(run(data), Ok(Value::List(_))));
    }
}
