use std::num::NonZeroU32;

use super::*;

#[test]
fn the_remembered_profile_is_checked_only_when_listed_and_startable() {
    let page = [("tiny", true), ("gpu", false), ("big", true)];
    assert_eq!(preselect(&page, Some("big")), Some(2));
    assert_eq!(preselect(&page, None), Some(0));
    // Unknown or forbidden (not listed for this user): ignored.
    assert_eq!(preselect(&page, Some("secret")), Some(0));
    assert_eq!(preselect(&page, Some("")), Some(0));
    // Listed but unable to start now: the first that can is checked instead.
    assert_eq!(preselect(&page, Some("gpu")), Some(0));
    assert_eq!(preselect(&[("gpu", false)], Some("gpu")), None);
    assert_eq!(preselect(&[], Some("gpu")), None);
}

#[test]
fn the_profile_cookie_is_for_the_hub_pages_only() {
    let plain = remember_profile_cookie("gpu-a100", false);
    for part in [
        "gantry-profile=gpu-a100",
        "Path=/hub/",
        "HttpOnly",
        "SameSite=Lax",
        "Max-Age=31536000",
    ] {
        assert!(plain.contains(part), "{part} not in {plain}");
    }
    assert!(!plain.contains("Secure"), "{plain}");
    assert!(remember_profile_cookie("p", true).contains("Secure"));
}

#[test]
fn a_gpu_shortage_says_what_is_needed_and_what_is_free() {
    let one = GpuCount::Exactly(NonZeroU32::new(1).unwrap_or(NonZeroU32::MIN));
    let two = GpuCount::Exactly(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
    let a = |free, total| GpuAvailability { free, total };
    assert_eq!(gpu_shortage(one, a(3, 4)), None);
    assert_eq!(gpu_shortage(GpuCount::All, a(4, 4)), None);
    assert_eq!(
        gpu_shortage(two, a(1, 4)).as_deref(),
        Some(
            "Not available now: it needs 2 GPUs and 1 of 4 are free. Try again when another server stops."
        )
    );
    assert_eq!(
        gpu_shortage(GpuCount::All, a(3, 4)).as_deref(),
        Some(
            "Not available now: it needs all 4 GPUs and 3 of 4 are free. Try again when another server stops."
        )
    );
    assert_eq!(
        gpu_shortage(one, a(0, 0)).as_deref(),
        Some("Not available: this host has no GPUs.")
    );
}
