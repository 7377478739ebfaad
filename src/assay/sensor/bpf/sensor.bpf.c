// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0
/*
 * Assay's kernel sensor: libbpf CO-RE, loaded from Python through ctypes (assay/sensor/_libbpf.py).
 *
 * Hooks (all BTF-enabled raw tracepoints, which need neither kprobes nor tracefs):
 *   tp_btf/sched_process_exec   exec with the full argv, bulk-read from mm->arg_start..arg_end (the kernel's own
 *                               copy on the new stack: complete, and no TOCTOU)
 *   tp_btf/sched_process_fork   fork/clone of a new process (threads are not processes and are skipped)
 *   tp_btf/sched_process_exit   exit of the last thread of a process, with its exit code
 *   tp_btf/sys_enter, sys_exit  every other behaviour. sys_enter stashes the arguments of the syscalls userspace
 *                               asked for (the `sc_desc` table, filled from Python per architecture), sys_exit
 *                               reads them back with the result and emits one record. Hooking the generic
 *                               syscall tracepoint instead of per-syscall tracepoints means no tracefs, and
 *                               every variant of a syscall (open/openat/openat2/creat...) is one table row.
 *
 * Records go to one ring buffer. Each is built in a per-CPU scratch map (the BPF stack is 512 bytes) and sent
 * with bpf_ringbuf_output(len) so only the used bytes travel. Wakeups are lazy by default: Python drains on a
 * timer and the kernel forces a wakeup only when the buffer fills past a threshold (per-event wakeups cost an
 * inter-processor interrupt each). A record that does not fit is counted per CPU and per record type in
 * `stats`; Python turns the counts into `loss` events. Nothing is dropped silently.
 *
 * The record layouts are in records.h.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "records.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* ---- configuration, patched into .rodata by the loader before load ---- */
const volatile u32 cfg_self_pid = 0;        /* the sensor's own tgid: never reported */
const volatile u32 cfg_lazy = 1;            /* lazy wakeups (see top of file) */
const volatile u64 cfg_wakeup_bytes = 1 << 20;
const volatile u32 cfg_sensitive = 0;       /* the sensitive-inode map is in use: stash read-only opens */
/* sha256 (16 hex digits) of sensor.bpf.c, paths.bpf.h, records.h and vmlinux.h, set by the Makefile */
#ifndef ASSAY_SRC_HASH
#define ASSAY_SRC_HASH "unknown"
#endif
const volatile char src_hash[17] = ASSAY_SRC_HASH;

/* ---- maps ---- */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} rb SEC(".maps");

struct stats {
	u64 events;              /* records submitted */
	u64 dropped;             /* records the ring buffer had no room for */
	u64 last_drop_ts;        /* boot ns of the latest drop */
	u64 dropped_by_type[EV_TYPES];
	u64 pending_full;        /* syscalls not stashed at entry because `pending` was full (also in dropped) */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct stats);
} stats SEC(".maps");

union scratch {
	struct exec_rec exec;
	struct sys_rec sys;
	struct fork_rec fork;
	struct exit_rec exit;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, union scratch);
} scratch SEC(".maps");

/* Path walks build the path backwards from the middle of an 8 KiB buffer, so a component write is always
 * inside the buffer whatever the verifier thinks the position is. */
struct pathbuf {
	char b[STR_CAP * 2];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct pathbuf);
} pathbufs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NR_SYSCALLS);
	__type(key, u32);
	__type(value, struct sc_desc);
} sc_desc SEC(".maps");

struct pending {
	u64 args[6];
	u32 nr;
	u32 mark;
};
#define MARK_WRITE 1
#define MARK_READ_CHECK 2

/* One entry per thread inside a hooked syscall. A plain hash, not an LRU: an LRU would evict the entry of a
 * thread still blocked in its syscall (accept, a FIFO open) under load, and that record would vanish without
 * a trace. Here a full table refuses the insert, which is counted as a dropped syscall record; the entry of a
 * thread that never comes back from its syscall is removed when the thread exits. Userspace may resize it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u32); /* thread id */
	__type(value, struct pending);
} pending SEC(".maps");

/* Processes whose activity is not reported at all (--ignore-pid: the server). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, u32);
	__type(value, u32);
} ignored SEC(".maps");

struct inode_key {
	u64 ino;
	u32 dev;
	u32 pad;
};
#define SENS_FILE 1
#define SENS_DIR 2

/* Files (and directories whose direct children) count as sensitive, keyed by inode: resolved in userspace
 * from a path list, so relative paths, symlinks and hard links all match. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct inode_key);
	__type(value, u32);
} sensitive SEC(".maps");

/* Patterns that no inode can stand for, because the file does not exist yet or lives in any home: a file
 * name in a directory name (".aws" + "credentials"), any file in a directory name (".ssh" + any), or a file name
 * anywhere. An empty half is a wildcard. */
#define NAME_CAP 32
struct name_key {
	char dir[NAME_CAP];
	char name[NAME_CAP];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct name_key);
	__type(value, u32);
} sensitive_names SEC(".maps");

/* ---- helpers ---- */
static __always_inline struct stats *stats_slot(void)
{
	u32 zero = 0;
	return bpf_map_lookup_elem(&stats, &zero);
}

static __always_inline void submit(void *rec, u64 len, u32 type)
{
	struct stats *s = stats_slot();
	u64 flags = 0;

	if (cfg_lazy)
		flags = bpf_ringbuf_query(&rb, BPF_RB_AVAIL_DATA) > cfg_wakeup_bytes ? BPF_RB_FORCE_WAKEUP
										      : BPF_RB_NO_WAKEUP;
	if (bpf_ringbuf_output(&rb, rec, len, flags) == 0) {
		if (s)
			__sync_fetch_and_add(&s->events, 1);
		return;
	}
	if (s) {
		__sync_fetch_and_add(&s->dropped, 1);
		s->last_drop_ts = bpf_ktime_get_boot_ns();
		if (type < EV_TYPES)
			__sync_fetch_and_add(&s->dropped_by_type[type], 1);
	}
}

/* A syscall whose entry could not be stashed: its record will never be built, so it counts as dropped. */
static __always_inline void pending_lost(void)
{
	struct stats *s = stats_slot();

	if (!s)
		return;
	__sync_fetch_and_add(&s->dropped, 1);
	__sync_fetch_and_add(&s->dropped_by_type[EV_SYSCALL], 1);
	__sync_fetch_and_add(&s->pending_full, 1);
	s->last_drop_ts = bpf_ktime_get_boot_ns();
}

static __always_inline bool is_ignored(u32 tgid)
{
	if (tgid == cfg_self_pid)
		return true;
	return bpf_map_lookup_elem(&ignored, &tgid) != 0;
}

/* The pid of a task inside its own (innermost) pid namespace, and that namespace's inode. */
static __always_inline u32 ns_pid_of(struct task_struct *t, u32 *pidns)
{
	struct pid *tp = BPF_CORE_READ(t, thread_pid);
	unsigned int level = BPF_CORE_READ(tp, level);
	struct upid up = {};

	/* pid->numbers[] is a flexible array: index it by hand, with CO-RE offsets. */
	bpf_probe_read_kernel(&up, sizeof(up),
			      (void *)tp + bpf_core_field_offset(struct pid, numbers) +
				      (u64)(level & 31) * bpf_core_type_size(struct upid));
	if (pidns)
		*pidns = BPF_CORE_READ(up.ns, ns.inum);
	return up.nr;
}

static __always_inline void fill_hdr(struct hdr *h, struct task_struct *t, u32 type)
{
	struct task_struct *leader = BPF_CORE_READ(t, group_leader);
	struct task_struct *parent = BPF_CORE_READ(t, real_parent);
	const struct cred *cred = BPF_CORE_READ(t, real_cred);

	h->ts = bpf_ktime_get_boot_ns();
	h->start = BPF_CORE_READ(leader, start_boottime);
	h->pstart = BPF_CORE_READ(parent, group_leader, start_boottime);
	h->cgroup_id = BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
	h->type = type;
	h->flags = 0;
	h->pid = BPF_CORE_READ(t, tgid);
	h->tid = BPF_CORE_READ(t, pid);
	h->ppid = BPF_CORE_READ(parent, tgid);
	h->uid = BPF_CORE_READ(cred, uid.val);
	h->euid = BPF_CORE_READ(cred, euid.val);
	h->gid = BPF_CORE_READ(cred, gid.val);
	h->egid = BPF_CORE_READ(cred, egid.val);
	h->loginuid = BPF_CORE_READ(t, loginuid.val);
	h->sessionid = BPF_CORE_READ(t, sessionid);
	h->mntns = BPF_CORE_READ(t, nsproxy, mnt_ns, ns.inum);
	h->netns = BPF_CORE_READ(t, nsproxy, net_ns, ns.inum);
	h->ns_pid = ns_pid_of(leader, &h->pidns);
	h->pad = 0;
	BPF_CORE_READ_STR_INTO(&h->comm, t, comm);
}

/* args[i] with an index the verifier can see is in range */
static __always_inline u64 argn(const u64 *args, u32 i)
{
	if (i > 5)
		return 0;
	return args[i];
}

static __always_inline void *scratch_rec(void)
{
	u32 zero = 0;
	return bpf_map_lookup_elem(&scratch, &zero);
}

#include "paths.bpf.h"

/* ---- exec ---- */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(assay_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct exec_rec *e = scratch_rec();
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	unsigned long as, ae;
	struct file *f;
	u32 off, r;
	u64 len;
	long n;

	if (!e || is_ignored(bpf_get_current_pid_tgid() >> 32))
		return 0;
	fill_hdr(&e->h, t, EV_EXEC);

	/* argv: one bulk read of the kernel's own copy on the new stack */
	as = BPF_CORE_READ(t, mm, arg_start);
	ae = BPF_CORE_READ(t, mm, arg_end);
	len = ae > as ? ae - as : 0;
	e->argv_total = len;
	if (len > ARGV_CAP) {
		len = ARGV_CAP;
		e->h.flags |= F_ARGV_TRUNC;
	}
	if (len && bpf_probe_read_user(e->data, len, (void *)as)) {
		e->h.flags |= F_ARGV_FAULT;
		len = 0;
	}
	e->argv_len = len;
	off = len;

	/* the name execve() was given */
	e->filename_len = 0;
	n = bpf_probe_read_kernel_str(&e->data[off & (ARGV_CAP * 2 - 1)], STR_CAP, BPF_CORE_READ(bprm, filename));
	if (n > 0) {
		e->filename_len = n - 1;
		off += n;
	}
	/* the file really mapped, and the cwd: absolute, from the dentries */
	f = BPF_CORE_READ(bprm, file);
	off &= (ARGV_CAP * 2 - 1); /* <= ARGV_CAP + STR_CAP: the verifier sees the room for two paths left */
	r = path_into((struct strbuf *)&e->data[off], (u64)BPF_CORE_READ(f, f_path.mnt),
		      (u64)BPF_CORE_READ(f, f_path.dentry));
	e->h.flags |= r & PATH_TRUNC_BIT ? F_PATH_TRUNC : 0;
	e->exe_len = PATH_LEN(r);
	off += PATH_LEN(r);
	if (off > ARGV_CAP + STR_CAP * 2)
		off = ARGV_CAP + STR_CAP * 2;
	r = fd_path_into((struct strbuf *)&e->data[off], AT_FDCWD);
	e->h.flags |= r & PATH_TRUNC_BIT ? F_PATH_TRUNC : 0;
	e->cwd_len = PATH_LEN(r);
	off += PATH_LEN(r);
	/* cgroup directory names: a container runtime names them after the container */
	e->cg_len = 0;
	e->cg1_len = 0;
	if (off > ARGV_CAP + STR_CAP * 3)
		off = ARGV_CAP + STR_CAP * 3;
	n = bpf_probe_read_kernel_str(&e->data[off], CG_CAP, BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, name));
	if (n > 0) {
		e->cg_len = n - 1;
		off += n;
	}
	if (off > ARGV_CAP + STR_CAP * 3 + CG_CAP)
		off = ARGV_CAP + STR_CAP * 3 + CG_CAP;
	if (bpf_core_enum_value_exists(enum cgroup_subsys_id, cpu_cgrp_id)) {
		int id = bpf_core_enum_value(enum cgroup_subsys_id, cpu_cgrp_id);
		struct cgroup_subsys_state *css = 0;
		struct css_set *cs = BPF_CORE_READ(t, cgroups);

		bpf_probe_read_kernel(&css, sizeof(css), &cs->subsys[id & 7]);
		n = bpf_probe_read_kernel_str(&e->data[off], CG_CAP, BPF_CORE_READ(css, cgroup, kn, name));
		if (n > 0) {
			e->cg1_len = n - 1;
			off += n;
		}
	}
	if (off > sizeof(e->data))
		off = sizeof(e->data);
	submit(e, __builtin_offsetof(struct exec_rec, data) + off, EV_EXEC);
	return 0;
}

/* ---- fork ---- */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(assay_fork, struct task_struct *parent, struct task_struct *child)
{
	struct fork_rec *e = scratch_rec();
	struct task_struct *rp;

	if (!e || BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return 0; /* a new thread, not a new process */
	if (is_ignored(bpf_get_current_pid_tgid() >> 32))
		return 0;
	fill_hdr(&e->h, (struct task_struct *)bpf_get_current_task(), EV_FORK);
	rp = BPF_CORE_READ(child, real_parent);
	e->child_pid = BPF_CORE_READ(child, tgid);
	e->child_start = BPF_CORE_READ(child, start_boottime);
	e->child_ppid = BPF_CORE_READ(rp, tgid);
	e->child_pstart = BPF_CORE_READ(rp, group_leader, start_boottime);
	e->child_ns_pid = ns_pid_of(child, 0);
	e->pad = 0;
	submit(e, sizeof(*e), EV_FORK);
	return 0;
}

/* ---- exit ---- */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(assay_exit, struct task_struct *p)
{
	struct exit_rec *e;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	u32 tid = (u32)bpf_get_current_pid_tgid();

	/* every exiting thread: a syscall it entered and never left (killed inside it) leaves no stale entry */
	bpf_map_delete_elem(&pending, &tid);
	/* signal->live reaches 0 when the last thread of the process exits: that is the process's exit. */
	if (BPF_CORE_READ(t, signal, live.counter) != 0)
		return 0;
	if (is_ignored(bpf_get_current_pid_tgid() >> 32))
		return 0;
	e = scratch_rec();
	if (!e)
		return 0;
	fill_hdr(&e->h, t, EV_EXIT);
	e->exit_code = BPF_CORE_READ(t, exit_code);
	e->pad = 0;
	submit(e, sizeof(*e), EV_EXIT);
	return 0;
}

/* ---- syscalls: stash the arguments at entry ---- */
#define O_WRONLY 01
#define O_RDWR 02
#define O_CREAT 0100
#define O_TRUNC 01000

SEC("tp_btf/sys_enter")
int BPF_PROG(assay_sys_enter, struct pt_regs *regs, long id)
{
	struct sc_desc *d;
	struct pending p = {};
	u32 key = id, tid;
	u64 pid_tgid;

	if (id < 0 || id >= NR_SYSCALLS)
		return 0;
	d = bpf_map_lookup_elem(&sc_desc, &key);
	if (!d || !d->hooked)
		return 0;
	pid_tgid = bpf_get_current_pid_tgid();
	if (is_ignored(pid_tgid >> 32))
		return 0;
	p.args[0] = regs->di;
	p.args[1] = regs->si;
	p.args[2] = regs->dx;
	p.args[3] = regs->r10;
	p.args[4] = regs->r8;
	p.args[5] = regs->r9;
	p.nr = key;
	if (d->match_arg < 6 && argn(p.args, d->match_arg) != d->match_val)
		return 0;
	if (d->open_flags_arg != NO_ARG) {
		u64 flags = 0;

		if (d->open_flags_arg == OPEN_HOW)
			bpf_probe_read_user(&flags, sizeof(flags), (void *)p.args[2]); /* open_how.flags */
		else
			flags = argn(p.args, d->open_flags_arg);
		/* Write intent is filtered here: most opens are reads and never leave the kernel. */
		if (flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC))
			p.mark = MARK_WRITE;
		else if (cfg_sensitive)
			p.mark = MARK_READ_CHECK;
		else
			return 0;
	}
	tid = (u32)pid_tgid;
	if (bpf_map_update_elem(&pending, &tid, &p, BPF_ANY))
		pending_lost(); /* the table is full (-E2BIG) */
	return 0;
}

/* Flags F_SENSITIVE[_DIR] when the opened file, or its directory, is on the sensitive list; else 0. */
static __noinline u32 sensitive_match(struct file *f)
{
	struct inode_key k = {};
	struct name_key nk = {};
	struct inode *ino;
	struct dentry *de, *dir;
	u32 *v;

	if (!f)
		return 0;
	ino = BPF_CORE_READ(f, f_inode);
	k.ino = BPF_CORE_READ(ino, i_ino);
	k.dev = BPF_CORE_READ(ino, i_sb, s_dev);
	if (bpf_map_lookup_elem(&sensitive, &k))
		return F_SENSITIVE;
	de = BPF_CORE_READ(f, f_path.dentry);
	dir = BPF_CORE_READ(de, d_parent);
	ino = BPF_CORE_READ(dir, d_inode);
	k.ino = BPF_CORE_READ(ino, i_ino);
	k.dev = BPF_CORE_READ(ino, i_sb, s_dev);
	v = bpf_map_lookup_elem(&sensitive, &k);
	if (v && (*v & SENS_DIR))
		return F_SENSITIVE | F_SENSITIVE_DIR;
	/* by name: (dir, name), then (dir, any), then (any, name) */
	bpf_probe_read_kernel_str(nk.dir, NAME_CAP, BPF_CORE_READ(dir, d_name.name));
	bpf_probe_read_kernel_str(nk.name, NAME_CAP, BPF_CORE_READ(de, d_name.name));
	if (bpf_map_lookup_elem(&sensitive_names, &nk))
		return F_SENSITIVE;
	__builtin_memset(nk.name, 0, NAME_CAP);
	if (bpf_map_lookup_elem(&sensitive_names, &nk))
		return F_SENSITIVE | F_SENSITIVE_DIR;
	__builtin_memset(nk.dir, 0, NAME_CAP);
	bpf_probe_read_kernel_str(nk.name, NAME_CAP, BPF_CORE_READ(de, d_name.name));
	if (bpf_map_lookup_elem(&sensitive_names, &nk))
		return F_SENSITIVE;
	return 0;
}

/* ---- syscalls: build the record at exit, one global function per part ---- */
#define DATA_SZ SYS_DATA

/* A user string argument into slot i; a relative path also gets the directory it is relative to. */
__noinline int sys_add_str(struct sys_rec *e, u64 i, u64 arg, u64 dirfd_arg)
{
	u32 off, r;
	long n;
	char first;
	s64 dirfd;

	if (!e || i > 2 || arg > 5)
		return 0;
	off = e->used;
	if (off > DATA_SZ - STR_CAP)
		return 0;
	n = bpf_probe_read_user_str(&e->data[off], STR_CAP, (void *)e->args[arg]);
	if (n <= 0) {
		e->h.flags |= F_STR_FAULT;
		return 0;
	}
	first = e->data[off];
	e->slen[i] = n; /* with its NUL, so that "" (AT_EMPTY_PATH) is told from absent */
	off += n;
	e->used = off;
	if (i > 1 || first == '/' || dirfd_arg == NOT_PATH)
		return 0;
	if (dirfd_arg == DIRFD_CWD)
		dirfd = AT_FDCWD;
	else if (dirfd_arg < 6)
		dirfd = (int)e->args[dirfd_arg];
	else
		return 0;
	barrier_var(off); /* check the very register the call uses */
	if (off > DATA_SZ - STR_CAP)
		return 0;
	r = fd_path_into((struct strbuf *)&e->data[off], dirfd);
	e->h.flags |= r & PATH_TRUNC_BIT ? F_PATH_TRUNC : 0;
	e->slen[S_BASE0 + i] = PATH_LEN(r);
	e->used = off + PATH_LEN(r);
	return 0;
}

/* The path of an fd argument (fchmod, fchown, finit_module). */
__noinline int sys_add_fd_path(struct sys_rec *e, u64 arg)
{
	u32 off, r;

	if (!e || arg > 5)
		return 0;
	off = e->used;
	if (off > DATA_SZ - STR_CAP)
		return 0;
	r = fd_path_into((struct strbuf *)&e->data[off], (int)e->args[arg]);
	e->h.flags |= r & PATH_TRUNC_BIT ? F_PATH_TRUNC : 0;
	e->slen[S_FDPATH] = PATH_LEN(r);
	e->used = off + PATH_LEN(r);
	return 0;
}

/* A user struct: a sockaddr, open_how, the head of bpf_attr. */
__noinline int sys_add_blob(struct sys_rec *e, u64 arg, u64 len)
{
	u32 off;

	if (!e || arg > 5)
		return 0;
	off = e->used;
	if (off > DATA_SZ - BLOB_CAP)
		return 0;
	if (len > BLOB_CAP)
		len = BLOB_CAP;
	if (len && bpf_probe_read_user(&e->data[off], len, (void *)e->args[arg]) == 0) {
		e->blob_len = len;
		e->used = off + len;
	}
	return 0;
}

/* The socket behind an fd: family, type, local and remote addresses after the call. */
__noinline int sys_add_sock(struct sys_rec *e, s64 fd)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct file *f;
	struct socket *sock;
	struct sock *sk;
	u16 family;

	if (!e || fd < 0)
		return 0;
	f = fd_file(t, fd);
	if (!f || (BPF_CORE_READ(f, f_inode, i_mode) & 0170000) != 0140000) /* not S_IFSOCK */
		return 0;
	sock = BPF_CORE_READ(f, private_data);
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->sk.family = family;
	e->sk.type = BPF_CORE_READ(sk, sk_type);
	e->sk.protocol = BPF_CORE_READ(sk, sk_protocol);
	e->sk.state = BPF_CORE_READ(sk, __sk_common.skc_state);
	e->sk.lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->sk.rport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == 2) { /* AF_INET */
		u32 la = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		u32 ra = BPF_CORE_READ(sk, __sk_common.skc_daddr);

		__builtin_memcpy(e->sk.laddr, &la, 4);
		__builtin_memcpy(e->sk.raddr, &ra, 4);
	} else if (family == 10) { /* AF_INET6 */
		BPF_CORE_READ_INTO(&e->sk.laddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&e->sk.raddr, sk, __sk_common.skc_v6_daddr);
	}
	e->h.flags |= F_SOCK;
	return 0;
}

struct argv_ctx {
	struct sys_rec *e;
	const char *const *argv;
	u32 end;
	u32 done;
};

static long argv_step(u32 i, struct argv_ctx *c)
{
	struct sys_rec *e = c->e;
	const char *p = 0;
	u32 off = e->used;
	long n;

	if (bpf_probe_read_user(&p, sizeof(p), &c->argv[i])) {
		e->h.flags |= F_ARGV_FAULT;
		return 1;
	}
	if (!p) {
		c->done = 1;
		return 1;
	}
	if (off + FAIL_ARG_CAP > c->end || off > DATA_SZ - FAIL_ARG_CAP) {
		e->h.flags |= F_ARGV_TRUNC;
		return 1;
	}
	n = bpf_probe_read_user_str(&e->data[off], FAIL_ARG_CAP, p);
	if (n <= 0) {
		e->h.flags |= F_ARGV_FAULT;
		return 1;
	}
	e->used = off + n;
	return 0;
}

/* The argv of a failed execve, argument by argument (nothing else has a copy of it). */
__noinline int sys_add_argv(struct sys_rec *e, u64 arg)
{
	struct argv_ctx c = {};
	u32 start;

	if (!e || arg > 5 || !e->args[arg])
		return 0;
	start = e->used;
	c.e = e;
	c.argv = (const char *const *)e->args[arg];
	c.end = start + FAIL_ARGV_CAP;
	bpf_loop(FAIL_MAX_ARGS, argv_step, &c, 0);
	if (!c.done && !(e->h.flags & F_ARGV_FAULT))
		e->h.flags |= F_ARGV_TRUNC;
	e->argv_len = e->used - start;
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(assay_sys_exit, struct pt_regs *regs, long ret)
{
	struct task_struct *t;
	struct sys_rec *e;
	struct sc_desc *d;
	struct pending *p;
	u32 key, tid, sflags = 0, used;
	int i;

	key = regs->orig_ax;
	if (key >= NR_SYSCALLS)
		return 0;
	d = bpf_map_lookup_elem(&sc_desc, &key);
	if (!d || !d->hooked)
		return 0;
	tid = (u32)bpf_get_current_pid_tgid();
	p = bpf_map_lookup_elem(&pending, &tid);
	if (!p)
		return 0;
	if (p->nr != key || ((d->flags & D_FAILED_ONLY) && ret >= 0))
		goto out;
	t = (struct task_struct *)bpf_get_current_task();
	if (p->mark == MARK_READ_CHECK) {
		/* a read-only open: report it only when it opened a sensitive file */
		if (ret < 0)
			goto out;
		sflags = sensitive_match(fd_file(t, ret));
		if (!sflags)
			goto out;
	}
	e = scratch_rec();
	if (!e)
		goto out;
	fill_hdr(&e->h, t, EV_SYSCALL);
	e->h.flags |= sflags;
	e->ret = ret;
	e->nr = key;
	__builtin_memcpy(e->args, p->args, sizeof(e->args));
	bpf_map_delete_elem(&pending, &tid);
	for (i = 0; i < S_SLOTS; i++)
		e->slen[i] = 0;
	e->blob_len = 0;
	e->argv_len = 0;
	e->used = 0;
	__builtin_memset(&e->sk, 0, sizeof(e->sk));

	for (i = 0; i < 3; i++)
		if (d->str_arg[i] < 6)
			sys_add_str(e, i, d->str_arg[i], d->str_dirfd[i]);
	if (d->fd_path_arg < 6)
		sys_add_fd_path(e, d->fd_path_arg);
	if (d->blob_arg < 6)
		sys_add_blob(e, d->blob_arg, d->blob_len_arg < 6 ? argn(e->args, d->blob_len_arg) : d->blob_size);
	if (d->sock_fd_arg == FROM_RET)
		sys_add_sock(e, ret);
	else if (d->sock_fd_arg < 6)
		sys_add_sock(e, (int)argn(e->args, d->sock_fd_arg));
	if (d->flags & D_ARGV)
		sys_add_argv(e, d->argv_arg);
	used = e->used;
	if (used > DATA_SZ)
		used = DATA_SZ;
	submit(e, __builtin_offsetof(struct sys_rec, data) + used, EV_SYSCALL);
	return 0;
out:
	bpf_map_delete_elem(&pending, &tid);
	return 0;
}
