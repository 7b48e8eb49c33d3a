/*
 * flowgate_h.h — include datapath/include/flowgate.h next to the kernel's
 * UAPI headers. For userspace, flowgate.h typedefs __u8..__u64 from
 * <stdint.h>; on 64-bit Linux that __u64 (unsigned long) conflicts with
 * <linux/types.h>'s (unsigned long long), which libbpf's headers pull in.
 * Its BPF branch includes <linux/types.h> instead, which is exactly right
 * here too, so take that branch for the one include.
 */
#pragma once

#include <linux/types.h>

#ifndef __BPF__
#define __BPF__ 1
#define FG_UNDEF_BPF_AFTER_INCLUDE 1
#endif
#include <flowgate.h>
#ifdef FG_UNDEF_BPF_AFTER_INCLUDE
#undef __BPF__
#undef FG_UNDEF_BPF_AFTER_INCLUDE
#endif
