//! A small binding to Linux-PAM (libpam), used by the monitor (root) as
//! OpenSSH's monitor uses it with `UsePAM yes`: authentication (password
//! and keyboard-interactive), account management, credentials and session
//! management, and the environment PAM modules set (pam_env).
//!
//! The conversation function is a Rust closure set for the duration of one
//! PAM call ([`Pam::authenticate`] and the others take it as an argument),
//! so a keyboard-interactive conversation can ask the kex worker for the
//! client's answers while `pam_authenticate` runs. Answers (passwords) are
//! copied into memory PAM owns (and frees); the Rust copies are zeroized.
#![allow(unsafe_code)] // FFI to libpam, which has no safe crate here

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr;

use zeroize::Zeroizing;

/// The PAM service name: /etc/pam.d/resshd (PAM falls back to
/// /etc/pam.d/other when it is missing).
pub const SERVICE: &str = "resshd";

#[repr(C)]
struct PamHandle {
    _private: [u8; 0],
}

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn = unsafe extern "C" fn(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int;

#[repr(C)]
struct PamConv {
    conv: ConvFn,
    appdata_ptr: *mut c_void,
}

#[link(name = "pam")]
extern "C" {
    fn pam_start(
        service_name: *const c_char,
        user: *const c_char,
        pam_conversation: *const PamConv,
        pamh: *mut *mut PamHandle,
    ) -> c_int;
    fn pam_end(pamh: *mut PamHandle, pam_status: c_int) -> c_int;
    fn pam_authenticate(pamh: *mut PamHandle, flags: c_int) -> c_int;
    fn pam_acct_mgmt(pamh: *mut PamHandle, flags: c_int) -> c_int;
    fn pam_setcred(pamh: *mut PamHandle, flags: c_int) -> c_int;
    fn pam_open_session(pamh: *mut PamHandle, flags: c_int) -> c_int;
    fn pam_close_session(pamh: *mut PamHandle, flags: c_int) -> c_int;
    fn pam_set_item(pamh: *mut PamHandle, item_type: c_int, item: *const c_void) -> c_int;
    fn pam_get_item(pamh: *const PamHandle, item_type: c_int, item: *mut *const c_void) -> c_int;
    fn pam_getenvlist(pamh: *mut PamHandle) -> *mut *mut c_char;
    fn pam_strerror(pamh: *mut PamHandle, errnum: c_int) -> *const c_char;
}

// Return codes (Linux-PAM's _pam_types.h).
pub const PAM_SUCCESS: c_int = 0;
pub const PAM_PERM_DENIED: c_int = 6;
pub const PAM_AUTH_ERR: c_int = 7;
pub const PAM_USER_UNKNOWN: c_int = 10;
pub const PAM_MAXTRIES: c_int = 11;
pub const PAM_NEW_AUTHTOK_REQD: c_int = 12;
pub const PAM_ACCT_EXPIRED: c_int = 13;
pub const PAM_CONV_ERR: c_int = 19;
const PAM_BUF_ERR: c_int = 5;

// Items.
const PAM_USER: c_int = 2;
pub const PAM_TTY: c_int = 3;
pub const PAM_RHOST: c_int = 4;

// Flags.
pub const PAM_SILENT: c_int = 0x8000;
pub const PAM_DISALLOW_NULL_AUTHTOK: c_int = 0x0001;
const PAM_ESTABLISH_CRED: c_int = 0x0002;
const PAM_DELETE_CRED: c_int = 0x0004;

// Message styles.
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;
const PAM_ERROR_MSG: c_int = 3;
const PAM_TEXT_INFO: c_int = 4;

/// PAM's limit on messages in one conversation call.
const PAM_MAX_NUM_MSG: c_int = 32;
/// Longest answer handed to PAM (PAM_MAX_RESP_SIZE).
const PAM_MAX_RESP_SIZE: usize = 512;

/// What a PAM module says or asks in a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A prompt whose answer is not echoed (a password).
    PromptEchoOff(String),
    /// A prompt whose answer is echoed.
    PromptEchoOn(String),
    Error(String),
    Info(String),
}

impl Message {
    pub fn is_prompt(&self) -> bool {
        matches!(self, Message::PromptEchoOff(_) | Message::PromptEchoOn(_))
    }
}

/// The conversation: one answer per message (None for the non-prompts),
/// or None to fail the conversation (PAM_CONV_ERR).
pub type Conversation<'a> = dyn FnMut(&[Message]) -> Option<Vec<Option<Zeroizing<String>>>> + 'a;

/// A PAM call that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PamError {
    pub code: c_int,
    /// pam_strerror's text.
    pub text: String,
}

impl std::fmt::Display for PamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for PamError {}

/// Where the conversation function finds the closure of the call in
/// progress: a pointer to a `&mut Conversation` on that call's stack, or
/// null outside a call (then every prompt fails).
struct Slot {
    current: *mut c_void,
}

/// One PAM transaction for one user.
pub struct Pam {
    handle: *mut PamHandle,
    /// Boxed: PAM keeps a pointer to it (appdata_ptr).
    slot: Box<Slot>,
    user: String,
    last: c_int,
    cred_established: bool,
    session_open: bool,
}

/// A string from C, lossily.
unsafe fn c_text(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: the caller passes a NUL-terminated string from PAM.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// The conversation function PAM calls: decodes the messages, runs the
/// closure of the call in progress, and hands its answers to PAM in
/// malloc'd memory (PAM frees it).
unsafe extern "C" fn converse(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int {
    // SAFETY: Linux-PAM calls this with `num_msg` message pointers in `msg`, a
    // place for the answers in `resp` and the `appdata_ptr` of our pam_conv,
    // which points to the `Slot` of a live handle; each is checked for null
    // and the count bounded before use, and the answers are allocated with
    // malloc as PAM frees them.
    unsafe {
        if resp.is_null() || msg.is_null() || appdata_ptr.is_null() {
            return PAM_CONV_ERR;
        }
        *resp = ptr::null_mut();
        if num_msg <= 0 || num_msg > PAM_MAX_NUM_MSG {
            return PAM_CONV_ERR;
        }
        let slot = &mut *(appdata_ptr as *mut Slot);
        if slot.current.is_null() {
            return PAM_CONV_ERR;
        }
        let n = num_msg as usize;
        let mut messages = Vec::with_capacity(n);
        for i in 0..n {
            // Linux-PAM passes an array of pointers to messages.
            let m = *msg.add(i);
            if m.is_null() {
                return PAM_CONV_ERR;
            }
            let text = c_text((*m).msg);
            messages.push(match (*m).msg_style {
                PAM_PROMPT_ECHO_OFF => Message::PromptEchoOff(text),
                PAM_PROMPT_ECHO_ON => Message::PromptEchoOn(text),
                PAM_ERROR_MSG => Message::Error(text),
                PAM_TEXT_INFO => Message::Info(text),
                _ => return PAM_CONV_ERR,
            });
        }
        let handler = &mut *(slot.current as *mut &mut Conversation<'_>);
        let answers =
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(&messages))) {
                Ok(Some(a)) if a.len() == n => a,
                _ => return PAM_CONV_ERR,
            };
        let out = libc::calloc(n, std::mem::size_of::<PamResponse>()) as *mut PamResponse;
        if out.is_null() {
            return PAM_BUF_ERR;
        }
        for (i, a) in answers.iter().enumerate() {
            let Some(a) = a else { continue };
            let bytes = a.as_bytes();
            if bytes.len() > PAM_MAX_RESP_SIZE || bytes.contains(&0) {
                free_responses(out, n);
                return PAM_CONV_ERR;
            }
            let p = libc::malloc(bytes.len() + 1) as *mut u8;
            if p.is_null() {
                free_responses(out, n);
                return PAM_BUF_ERR;
            }
            ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
            *p.add(bytes.len()) = 0;
            (*out.add(i)).resp = p as *mut c_char;
        }
        *resp = out;
        PAM_SUCCESS
    }
}

/// Frees (after wiping) the answers of a failed conversation.
unsafe fn free_responses(out: *mut PamResponse, n: usize) {
    // SAFETY: `out` is a calloc'd array of `n` responses whose `resp` fields
    // are null or NUL-terminated malloc'd strings, owned here.
    unsafe {
        for i in 0..n {
            let r = (*out.add(i)).resp;
            if !r.is_null() {
                let len = libc::strlen(r);
                ptr::write_bytes(r, 0, len);
                libc::free(r as *mut c_void);
            }
        }
        libc::free(out as *mut c_void);
    }
}

/// A conversation for calls that should not prompt: messages are kept in
/// `sink` (for the user, after login), prompts fail.
pub fn collect_messages(
    sink: &mut Vec<String>,
) -> impl FnMut(&[Message]) -> Option<Vec<Option<Zeroizing<String>>>> + '_ {
    move |msgs| {
        if msgs.iter().any(Message::is_prompt) {
            return None;
        }
        for m in msgs {
            if let Message::Error(t) | Message::Info(t) = m {
                sink.push(t.clone());
            }
        }
        Some(vec![None; msgs.len()])
    }
}

impl Pam {
    /// pam_start for `user`, with PAM_RHOST and PAM_TTY set as sshd sets
    /// them before authentication.
    pub fn start(service: &str, user: &str, rhost: &str) -> Result<Pam, PamError> {
        let err = |text: &str| PamError {
            code: PAM_USER_UNKNOWN,
            text: text.to_string(),
        };
        let c_service = CString::new(service).map_err(|_| err("bad service name"))?;
        let c_user = CString::new(user).map_err(|_| err("bad user name"))?;
        let mut slot = Box::new(Slot {
            current: ptr::null_mut(),
        });
        let conv = PamConv {
            conv: converse,
            appdata_ptr: &mut *slot as *mut Slot as *mut c_void,
        };
        let mut handle: *mut PamHandle = ptr::null_mut();
        // SAFETY: valid C strings; PAM copies the conv structure.
        let r = unsafe { pam_start(c_service.as_ptr(), c_user.as_ptr(), &conv, &mut handle) };
        if r != PAM_SUCCESS || handle.is_null() {
            return Err(PamError {
                code: r,
                text: format!("pam_start failed ({r})"),
            });
        }
        let mut pam = Pam {
            handle,
            slot,
            user: user.to_string(),
            last: PAM_SUCCESS,
            cred_established: false,
            session_open: false,
        };
        pam.set_item(PAM_RHOST, rhost)?;
        pam.set_item(PAM_TTY, "ssh")?;
        Ok(pam)
    }

    /// The user this transaction was started for.
    pub fn user(&self) -> &str {
        &self.user
    }

    fn error(&self, code: c_int) -> PamError {
        // SAFETY: the handle is valid; pam_strerror returns a static string.
        let text = unsafe { c_text(pam_strerror(self.handle, code)) };
        PamError { code, text }
    }

    fn check(&mut self, code: c_int) -> Result<(), PamError> {
        self.last = code;
        if code == PAM_SUCCESS {
            Ok(())
        } else {
            Err(self.error(code))
        }
    }

    /// pam_set_item for a string item.
    pub fn set_item(&mut self, item: c_int, value: &str) -> Result<(), PamError> {
        let v = CString::new(value).map_err(|_| PamError {
            code: PAM_BUF_ERR,
            text: "NUL in a PAM item".into(),
        })?;
        // SAFETY: PAM copies string items.
        let r = unsafe { pam_set_item(self.handle, item, v.as_ptr() as *const c_void) };
        self.check(r)
    }

    /// The user name PAM ended up with (a module may change it).
    pub fn pam_user(&self) -> Option<String> {
        let mut p: *const c_void = ptr::null();
        // SAFETY: PAM returns a pointer to its own copy of the item.
        let r = unsafe { pam_get_item(self.handle, PAM_USER, &mut p) };
        // SAFETY: PAM_USER is a NUL-terminated string, checked non-NULL, that
        // lives as long as the handle.
        (r == PAM_SUCCESS && !p.is_null()).then(|| unsafe { c_text(p as *const c_char) })
    }

    /// Runs `f` with `conv` as the conversation.
    fn with_conv<T>(
        &mut self,
        conv: &mut Conversation<'_>,
        f: impl FnOnce(*mut PamHandle) -> T,
    ) -> T {
        let mut r: &mut Conversation<'_> = conv;
        self.slot.current = &mut r as *mut &mut Conversation<'_> as *mut c_void;
        let out = f(self.handle);
        self.slot.current = ptr::null_mut();
        out
    }

    pub fn authenticate(
        &mut self,
        flags: c_int,
        conv: &mut Conversation<'_>,
    ) -> Result<(), PamError> {
        // SAFETY: a valid handle; the conversation outlives the call.
        let r = self.with_conv(conv, |h| unsafe { pam_authenticate(h, flags) });
        self.check(r)
    }

    pub fn acct_mgmt(&mut self, flags: c_int, conv: &mut Conversation<'_>) -> Result<(), PamError> {
        // SAFETY: as above.
        let r = self.with_conv(conv, |h| unsafe { pam_acct_mgmt(h, flags) });
        self.check(r)
    }

    /// pam_setcred(PAM_ESTABLISH_CRED); deleted again on drop.
    pub fn establish_cred(&mut self, conv: &mut Conversation<'_>) -> Result<(), PamError> {
        // SAFETY: as above.
        let r = self.with_conv(conv, |h| unsafe { pam_setcred(h, PAM_ESTABLISH_CRED) });
        self.check(r)?;
        self.cred_established = true;
        Ok(())
    }

    /// pam_open_session; closed again by [`Pam::close_session`] or on drop.
    pub fn open_session(&mut self, conv: &mut Conversation<'_>) -> Result<(), PamError> {
        // SAFETY: as above.
        let r = self.with_conv(conv, |h| unsafe { pam_open_session(h, 0) });
        self.check(r)?;
        self.session_open = true;
        Ok(())
    }

    /// pam_close_session and pam_setcred(PAM_DELETE_CRED), as far as they
    /// were opened.
    pub fn close_session(&mut self) -> Result<(), PamError> {
        let mut sink = Vec::new();
        let mut conv = collect_messages(&mut sink);
        let mut result = Ok(());
        if self.session_open {
            self.session_open = false;
            // SAFETY: as above.
            let r = self.with_conv(&mut conv, |h| unsafe { pam_close_session(h, 0) });
            result = self.check(r);
        }
        if self.cred_established {
            self.cred_established = false;
            // SAFETY: as above.
            let r = self.with_conv(&mut conv, |h| unsafe { pam_setcred(h, PAM_DELETE_CRED) });
            if result.is_ok() {
                result = self.check(r);
            }
        }
        result
    }

    /// The environment PAM modules set (pam_getenvlist), as name/value
    /// pairs; entries without `=` are skipped.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        // SAFETY: PAM returns a malloc'd NULL-terminated array of malloc'd
        // strings, which we own and free.
        unsafe {
            let list = pam_getenvlist(self.handle);
            if list.is_null() {
                return out;
            }
            let mut i = 0;
            loop {
                let p = *list.add(i);
                if p.is_null() {
                    break;
                }
                let s = c_text(p);
                if let Some((n, v)) = s.split_once('=') {
                    if !n.is_empty() {
                        out.push((n.to_string(), v.to_string()));
                    }
                }
                let len = libc::strlen(p);
                ptr::write_bytes(p, 0, len);
                libc::free(p as *mut c_void);
                i += 1;
            }
            libc::free(list as *mut c_void);
        }
        out
    }
}

impl Drop for Pam {
    fn drop(&mut self) {
        let _ = self.close_session();
        // SAFETY: the handle is valid and not used after this.
        unsafe { pam_end(self.handle, self.last) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transaction with a service that does not exist falls back to
    /// /etc/pam.d/other; whatever the system's policy, an unknown user
    /// never authenticates, and the conversation is called (or not)
    /// without crashing.
    #[test]
    fn unknown_user_fails() {
        let Ok(mut pam) = Pam::start("resshd-test-none", "no-such-user-ressh", "127.0.0.1") else {
            return; // no PAM configuration at all on this machine
        };
        assert_eq!(pam.user(), "no-such-user-ressh");
        let mut calls = 0;
        let mut conv = |m: &[Message]| {
            calls += 1;
            Some(
                m.iter()
                    .map(|m| m.is_prompt().then(|| Zeroizing::new("x".to_string())))
                    .collect(),
            )
        };
        assert!(pam.authenticate(PAM_SILENT, &mut conv).is_err());
    }
}
