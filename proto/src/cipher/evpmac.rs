//! [`EvpMac`], the small wrapper over OpenSSL 3's `EVP_MAC` API that the
//! EtM MACs (`aesctr.rs`) and Poly1305 (`chachapoly.rs`) use: the safe
//! `openssl` crate does not wrap `EVP_MAC`, so this is the one module of
//! the crate that calls OpenSSL directly.
#![allow(unsafe_code)] // FFI to OpenSSL's EVP_MAC, which the openssl crate lacks

use std::ffi::CStr;
use std::ptr::{self, NonNull};

use openssl::error::ErrorStack;
use openssl_sys as ffi;

use crate::error::Result;

/// An OpenSSL 3 `EVP_MAC_CTX`, reused across packets.
pub(super) struct EvpMac {
    ctx: NonNull<ffi::EVP_MAC_CTX>,
}

// SAFETY: the context is owned exclusively by this value and OpenSSL
// contexts carry no thread affinity; `&mut self` serialises all use.
unsafe impl Send for EvpMac {}

impl EvpMac {
    fn fetch(algorithm: &CStr) -> Result<Self> {
        openssl::init();
        // SAFETY: plain FFI calls with valid NUL-terminated strings; every
        // returned pointer is checked before use, and the fetched EVP_MAC is
        // released after the context has taken its own reference.
        unsafe {
            let mac = ffi::EVP_MAC_fetch(ptr::null_mut(), algorithm.as_ptr(), ptr::null());
            if mac.is_null() {
                return Err(ErrorStack::get().into());
            }
            let ctx = ffi::EVP_MAC_CTX_new(mac);
            ffi::EVP_MAC_free(mac);
            match NonNull::new(ctx) {
                Some(ctx) => Ok(EvpMac { ctx }),
                None => Err(ErrorStack::get().into()),
            }
        }
    }

    /// Poly1305, keyed anew by each [`EvpMac::init`].
    pub(super) fn poly1305() -> Result<Self> {
        Self::fetch(c"POLY1305")
    }

    /// HMAC with `digest` (an OpenSSL digest name) keyed once with `key`;
    /// later [`EvpMac::init`] calls with `None` reuse the key.
    pub(super) fn hmac(digest: &CStr, key: &[u8]) -> Result<Self> {
        let mut mac = Self::fetch(c"HMAC")?;
        // SAFETY: the builder and the parameter array are checked for NULL,
        // used only while alive and freed exactly once.
        unsafe {
            let bld = ffi::OSSL_PARAM_BLD_new();
            if bld.is_null() {
                return Err(ErrorStack::get().into());
            }
            let pushed =
                ffi::OSSL_PARAM_BLD_push_utf8_string(bld, c"digest".as_ptr(), digest.as_ptr(), 0);
            let params = if pushed == 1 {
                ffi::OSSL_PARAM_BLD_to_param(bld)
            } else {
                ptr::null_mut()
            };
            ffi::OSSL_PARAM_BLD_free(bld);
            if params.is_null() {
                return Err(ErrorStack::get().into());
            }
            let set = ffi::EVP_MAC_CTX_set_params(mac.ctx.as_ptr(), params);
            ffi::OSSL_PARAM_free(params);
            if set != 1 {
                return Err(ErrorStack::get().into());
            }
        }
        mac.init(Some(key))?;
        Ok(mac)
    }

    /// Starts a new computation, with a new key or (`None`) the last one.
    pub(super) fn init(&mut self, key: Option<&[u8]>) -> Result<()> {
        let (k, len) = key.map_or((ptr::null(), 0), |k| (k.as_ptr(), k.len()));
        // SAFETY: `k` is NULL or points to `len` readable bytes.
        let ok = unsafe { ffi::EVP_MAC_init(self.ctx.as_ptr(), k, len, ptr::null()) };
        if ok != 1 {
            return Err(ErrorStack::get().into());
        }
        Ok(())
    }

    pub(super) fn update(&mut self, data: &[u8]) -> Result<()> {
        // SAFETY: `data` is a valid slice.
        let ok = unsafe { ffi::EVP_MAC_update(self.ctx.as_ptr(), data.as_ptr(), data.len()) };
        if ok != 1 {
            return Err(ErrorStack::get().into());
        }
        Ok(())
    }

    /// Writes the MAC into `out` (which must hold all of it) and returns
    /// its length.
    pub(super) fn finish(&mut self, out: &mut [u8]) -> Result<usize> {
        let mut written = 0usize;
        // SAFETY: OpenSSL writes at most `out.len()` bytes into `out`.
        let ok = unsafe {
            ffi::EVP_MAC_final(self.ctx.as_ptr(), out.as_mut_ptr(), &mut written, out.len())
        };
        if ok != 1 || written > out.len() {
            return Err(ErrorStack::get().into());
        }
        Ok(written)
    }
}

impl Drop for EvpMac {
    fn drop(&mut self) {
        // SAFETY: the context was allocated by EVP_MAC_CTX_new and is freed
        // once; OpenSSL cleanses the key state on free.
        unsafe { ffi::EVP_MAC_CTX_free(self.ctx.as_ptr()) }
    }
}
