//! The Envoy dynamic-module ABI as Portcullis uses it, written from Envoy's published
//! `source/extensions/dynamic_modules/abi/abi.h` (types, the hooks Envoy calls, the callbacks it
//! exports), for Envoy 1.40 (ABI `v0.2.0`). Each callback declared here is one the 1.40 binary
//! exports (`scripts/check-module-abi.sh` compares the list with `nm -D` of the Envoy the
//! tests run); the loader binds them all at load (`BIND_NOW`), so an Envoy lacking one refuses
//! the module instead of failing at a request. The stored `abi.h` is older than 1.40, so the
//! argument lists were checked against the 1.40 binary's code (`objdump -d`, which registers
//! each callback reads): `http_get_downstream_direct_remote_address` takes (filter, *buffer),
//! with no port argument, unlike the access logger's; `http_set_dynamic_metadata_string` takes
//! its third buffer on the stack; `log` takes (level, buffer). `tests/it/module.rs` exercises
//! every one through a real Envoy.
//!
//! Architecture Invariant: this is the only file of the crate touching raw pointers. Every hook
//! turns Envoy's pointers into the safe [`Stream`] view or owned values, runs the safe code under
//! `catch_unwind`, and fails closed: a config that panics is refused (NULL), a request that
//! panics is answered 503.

#![allow(unsafe_code)]

use crate::engine::Engine;
use crate::filter::{Filter, HeaderKind, StreamView};
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// The ABI version this module was written against (Envoy 1.40 logs "matched" for it).
static ABI_VERSION: &[u8] = b"v0.2.0\0";

// ---- types (abi.h) ----

/// `envoy_dynamic_module_type_envoy_buffer`: bytes owned by Envoy.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    ptr: *const u8,
    length: usize,
}

/// `envoy_dynamic_module_type_module_buffer`: bytes owned by the module, copied by Envoy.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    ptr: *const u8,
    length: usize,
}

/// `envoy_dynamic_module_type_envoy_http_header`.
#[repr(C)]
#[derive(Clone, Copy)]
struct EnvoyHttpHeader {
    key_ptr: *const u8,
    key_length: usize,
    value_ptr: *const u8,
    value_length: usize,
}

/// `envoy_dynamic_module_type_module_http_header`.
#[repr(C)]
struct ModuleHttpHeader {
    key_ptr: *const u8,
    key_length: usize,
    value_ptr: *const u8,
    value_length: usize,
}

type FilterEnvoyPtr = *mut c_void;
type FilterModulePtr = *const c_void;
type ConfigEnvoyPtr = *mut c_void;
type ConfigModulePtr = *const c_void;

/// C enums are `int`-sized.
type CEnum = i32;

const HEADERS_CONTINUE: CEnum = 0;
const HEADERS_STOP_ITERATION: CEnum = 1;
const BODY_CONTINUE: CEnum = 0;
const TRAILERS_CONTINUE: CEnum = 0;

const LOG_INFO: CEnum = 2;
const LOG_ERROR: CEnum = 4;

unsafe extern "C" {
    fn envoy_dynamic_module_callback_log(level: CEnum, message: ModuleBuffer);
    fn envoy_dynamic_module_callback_http_get_headers_size(filter: FilterEnvoyPtr, kind: CEnum) -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(
        filter: FilterEnvoyPtr,
        kind: CEnum,
        result: *mut EnvoyHttpHeader,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(
        filter: FilterEnvoyPtr,
        kind: CEnum,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_send_response(
        filter: FilterEnvoyPtr,
        status: u32,
        headers: *mut ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: FilterEnvoyPtr,
        id: CEnum,
        result: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_downstream_direct_remote_address(
        filter: FilterEnvoyPtr,
        result: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
        filter: FilterEnvoyPtr,
        namespace: ModuleBuffer,
        key: ModuleBuffer,
        value: ModuleBuffer,
    );
}

fn module_buffer(bytes: &[u8]) -> ModuleBuffer {
    ModuleBuffer { ptr: bytes.as_ptr(), length: bytes.len() }
}

/// Copies Envoy-owned bytes (valid only during the hook) into an owned string; bytes that are
/// not UTF-8 are replaced, as the ext_authz path's conversion does.
fn owned(ptr: *const u8, length: usize) -> String {
    if ptr.is_null() || length == 0 {
        return String::new();
    }
    // SAFETY: Envoy guarantees `ptr` points at `length` readable bytes for this hook's duration.
    let bytes = unsafe { std::slice::from_raw_parts(ptr, length) };
    String::from_utf8_lossy(bytes).into_owned()
}

/// Logs through Envoy's `dynamic_modules` logger (the module has no logger of its own).
pub fn log(error: bool, message: &str) {
    // SAFETY: the buffer is valid for the call; Envoy copies it.
    unsafe {
        envoy_dynamic_module_callback_log(if error { LOG_ERROR } else { LOG_INFO }, module_buffer(message.as_bytes()))
    }
}

/// The request being filtered, as safe methods over Envoy's callbacks. Valid only inside the
/// hook that made it (Envoy's pointer is not kept).
pub struct Stream {
    envoy: FilterEnvoyPtr,
}

impl StreamView for Stream {
    /// Every header of `kind`, pseudo-headers included, in Envoy's order.
    fn headers(&self, kind: HeaderKind) -> Vec<(String, String)> {
        let kind = kind as CEnum;
        // SAFETY: `envoy` is the live filter pointer of the current hook.
        let size = unsafe { envoy_dynamic_module_callback_http_get_headers_size(self.envoy, kind) };
        let empty =
            EnvoyHttpHeader { key_ptr: std::ptr::null(), key_length: 0, value_ptr: std::ptr::null(), value_length: 0 };
        let mut raw = vec![empty; size];
        // SAFETY: `raw` has room for `size` entries, as the callback requires.
        if size == 0 || !unsafe { envoy_dynamic_module_callback_http_get_headers(self.envoy, kind, raw.as_mut_ptr()) } {
            return Vec::new();
        }
        raw.iter().map(|h| (owned(h.key_ptr, h.key_length), owned(h.value_ptr, h.value_length))).collect()
    }

    /// The connection's own peer (`ip:port`), never an address taken from `x-forwarded-for`:
    /// what ext_authz sends as `source.address`.
    fn direct_remote_address(&self) -> Option<String> {
        let mut out = EnvoyBuffer { ptr: std::ptr::null(), length: 0 };
        // SAFETY: `out` is a valid place for the result; Envoy owns what it points to.
        let found =
            unsafe { envoy_dynamic_module_callback_http_get_downstream_direct_remote_address(self.envoy, &mut out) };
        (found && !out.ptr.is_null()).then(|| owned(out.ptr, out.length))
    }

    /// A string attribute (`filter::attribute`), `None` when Envoy has none.
    fn attribute(&self, id: i32) -> Option<String> {
        let mut out = EnvoyBuffer { ptr: std::ptr::null(), length: 0 };
        // SAFETY: `out` is a valid place for the result; Envoy owns what it points to.
        let found = unsafe { envoy_dynamic_module_callback_http_filter_get_attribute_string(self.envoy, id, &mut out) };
        (found && !out.ptr.is_null()).then(|| owned(out.ptr, out.length))
    }

    /// Replaces every value of `name` (`None`: removes the header).
    fn set_header(&self, kind: HeaderKind, name: &str, value: Option<&str>) -> bool {
        let value = match value {
            Some(v) => module_buffer(v.as_bytes()),
            None => ModuleBuffer { ptr: std::ptr::null(), length: 0 },
        };
        // SAFETY: both buffers are valid for the call; Envoy copies them.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.envoy,
                kind as CEnum,
                module_buffer(name.as_bytes()),
                value,
            )
        }
    }

    /// Answers the client directly; the request goes no further.
    fn send_response(&self, status: u16, headers: &[(String, String)], body: &str, details: &str) {
        let mut raw: Vec<ModuleHttpHeader> = headers
            .iter()
            .map(|(k, v)| ModuleHttpHeader {
                key_ptr: k.as_ptr(),
                key_length: k.len(),
                value_ptr: v.as_ptr(),
                value_length: v.len(),
            })
            .collect();
        // SAFETY: every pointer refers to `headers`, `body` or `details`, alive for the call.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.envoy,
                u32::from(status),
                raw.as_mut_ptr(),
                raw.len(),
                module_buffer(body.as_bytes()),
                module_buffer(details.as_bytes()),
            )
        }
    }

    fn set_metadata(&self, namespace: &str, key: &str, value: &str) {
        // SAFETY: the buffers are valid for the call; Envoy copies them.
        unsafe {
            envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
                self.envoy,
                module_buffer(namespace.as_bytes()),
                module_buffer(key.as_bytes()),
                module_buffer(value.as_bytes()),
            )
        }
    }
}

// ---- hooks Envoy calls ----

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const u8 {
    ABI_VERSION.as_ptr()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _envoy: ConfigEnvoyPtr,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> ConfigModulePtr {
    let text = owned(config.ptr, config.length);
    let made = catch_unwind(AssertUnwindSafe(|| crate::settings::parse(&text).map_err(|e| e.0).and_then(Engine::new)));
    match made {
        Ok(Ok(engine)) => {
            log(false, &format!("portcullis: policy {} in force", engine.policy_hash()));
            Box::into_raw(Box::new(engine)) as ConfigModulePtr
        }
        Ok(Err(problems)) => {
            log(true, &format!("portcullis: filter configuration refused:\n{problems}"));
            std::ptr::null()
        }
        Err(_) => {
            log(true, "portcullis: filter configuration refused: the module panicked reading it");
            std::ptr::null()
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: ConfigModulePtr) {
    if !config.is_null() {
        // SAFETY: made by `Box::into_raw` in config_new; Envoy destroys each config once.
        drop(unsafe { Box::from_raw(config as *mut Arc<Engine>) });
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name: EnvoyBuffer,
    _config: EnvoyBuffer,
) -> *const c_void {
    log(true, "portcullis: per-route configuration is not supported; the route's policy is the filter's");
    std::ptr::null()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(_config: *const c_void) {}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: ConfigModulePtr,
    _envoy: FilterEnvoyPtr,
) -> FilterModulePtr {
    if config.is_null() {
        return std::ptr::null();
    }
    // SAFETY: `config` is the live `Arc<Engine>` made in config_new.
    let engine = unsafe { &*(config as *const Arc<Engine>) }.clone();
    Box::into_raw(Box::new(Filter::new(engine))) as FilterModulePtr
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter: FilterModulePtr) {
    if !filter.is_null() {
        // SAFETY: made by `Box::into_raw` in filter_new; Envoy destroys each filter once.
        drop(unsafe { Box::from_raw(filter as *mut Filter) });
    }
}

/// The filter behind `filter`, mutable: Envoy calls one stream's hooks on one thread, in turn.
fn filter_of<'a>(filter: FilterModulePtr) -> Option<&'a mut Filter> {
    // SAFETY: made by `Box::into_raw` in filter_new and alive until filter_destroy.
    (!filter.is_null()).then(|| unsafe { &mut *(filter as *mut Filter) })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    _end_of_stream: bool,
) -> CEnum {
    let stream = Stream { envoy };
    let Some(filter) = filter_of(filter) else {
        stream.send_response(
            503,
            &crate::filter::internal_error_headers(),
            crate::filter::INTERNAL_ERROR_BODY,
            "portcullis_no_filter",
        );
        return HEADERS_STOP_ITERATION;
    };
    match catch_unwind(AssertUnwindSafe(|| filter.on_request_headers(&stream))) {
        Ok(true) => HEADERS_CONTINUE,
        Ok(false) => HEADERS_STOP_ITERATION,
        Err(_) => {
            stream.send_response(
                503,
                &crate::filter::internal_error_headers(),
                crate::filter::INTERNAL_ERROR_BODY,
                "portcullis_panic",
            );
            HEADERS_STOP_ITERATION
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    _end_of_stream: bool,
) -> CEnum {
    let stream = Stream { envoy };
    if let Some(filter) = filter_of(filter) {
        // A panic here only loses the security headers of one response; the request was decided.
        let _ = catch_unwind(AssertUnwindSafe(|| filter.on_response_headers(&stream)));
    }
    HEADERS_CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
    _: bool,
) -> CEnum {
    BODY_CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(_: FilterEnvoyPtr, _: FilterModulePtr) -> CEnum {
    TRAILERS_CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
    _: bool,
) -> CEnum {
    BODY_CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
) -> CEnum {
    TRAILERS_CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(_: FilterEnvoyPtr, _: FilterModulePtr) {}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
    _callout_id: u64,
    _result: CEnum,
    _headers: *mut c_void,
    _headers_size: usize,
    _body_chunks: *mut c_void,
    _body_chunks_size: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
    _stream_id: u64,
    _headers: *mut c_void,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
    _stream_id: u64,
    _data: *const c_void,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
    _stream_id: u64,
    _trailers: *mut c_void,
    _trailers_size: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
    _stream_id: u64,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
    _stream_id: u64,
    _reason: CEnum,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(_: FilterEnvoyPtr, _: FilterModulePtr, _event_id: u64) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
) {
}
