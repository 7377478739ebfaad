/* SPDX-License-Identifier: Apache-2.0 OR GPL-2.0 */
/*
 * The records the sensor sends to userspace, and the per-syscall table userspace sends to the sensor.
 * Mirrored in assay/sensor/_records.py and _syscalls.py: the _Static_asserts pin the sizes, and
 * tests/sensor/test_records.py checks Python's struct formats against them.
 */
#ifndef ASSAY_RECORDS_H
#define ASSAY_RECORDS_H

/* ---- limits (documented caps; records say when they were hit) ---- */
#define ARGV_CAP 16384       /* argv bytes kept per exec; longer argv is flagged truncated */
#define STR_CAP 4096         /* one user string or path (PATH_MAX) */
#define FAIL_ARGV_CAP 8192   /* argv of a failed execve, read arg by arg */
#define FAIL_ARG_CAP 1024    /* one argument of a failed execve */
#define FAIL_MAX_ARGS 128
#define CG_CAP 128           /* a cgroup directory name */
#define BLOB_CAP 128         /* sockaddr, open_how, the head of bpf_attr */
#define WALK_DEPTH 64        /* path components (mount crossings included) of a dentry walk */
#define NR_SYSCALLS 512
#define SYS_DATA 24576      /* data area of a syscall record */

/* ---- record types ---- */
enum {
	EV_EXEC = 1,
	EV_FORK = 2,
	EV_EXIT = 3,
	EV_SYSCALL = 4,
	EV_TYPES = 5,
};

/* ---- record flags ---- */
#define F_ARGV_TRUNC (1u << 0)   /* argv longer than ARGV_CAP (or FAIL_ARGV_CAP) */
#define F_ARGV_FAULT (1u << 1)   /* argv could not be read */
#define F_PATH_TRUNC (1u << 2)   /* a path walk hit WALK_DEPTH or STR_CAP */
#define F_STR_FAULT (1u << 3)    /* a user string could not be read */
#define F_SENSITIVE (1u << 4)    /* a read-only open of a file on the sensitive list */
#define F_SENSITIVE_DIR (1u << 5) /* ... matched through its parent directory */
#define F_SOCK (1u << 6)         /* sockinfo is filled */

/* ---- the common header: who did it, where, when ----
 * The "context" block (cgroup_id .. pidns) is the same for every event of a process until it changes
 * credentials, namespaces or cgroup: userspace compares those 48 bytes as one key to reuse its cached
 * enrichment, so keep them contiguous. */
struct hdr {
	u64 ts;          /* bpf_ktime_get_boot_ns() */
	u64 start;       /* group leader's start_boottime (ns): the process's identity with pid */
	u64 pstart;      /* real parent's start_boottime (ns) */
	u32 type;
	u32 flags;
	u32 pid;         /* tgid */
	u32 tid;
	u32 ppid;        /* real parent's tgid, now */
	u32 ns_pid;      /* pid inside its own pid namespace */
	/* context block */
	u64 cgroup_id;   /* default-hierarchy cgroup id */
	u32 uid;
	u32 euid;
	u32 gid;
	u32 egid;
	u32 loginuid;
	u32 sessionid;
	u32 mntns;
	u32 netns;
	u32 pidns;
	u32 pad;
	char comm[16];
};
_Static_assert(__builtin_offsetof(struct hdr, cgroup_id) == 48, "context block starts at 48");
_Static_assert(__builtin_offsetof(struct hdr, comm) == 96, "context block ends at 96");
_Static_assert(sizeof(struct hdr) == 112, "hdr layout is mirrored in _records.py");

struct exec_rec {
	struct hdr h;
	u32 argv_len;    /* bytes of argv in data (NUL-separated) */
	u32 argv_total;  /* arg_end - arg_start: the full length, even when truncated */
	u16 filename_len; /* the name execve() was given (a script, a relative path...) */
	u16 exe_len;      /* the file actually mapped: absolute, symlinks resolved (an interpreter for scripts) */
	u16 cwd_len;
	u16 cg_len;      /* default-hierarchy cgroup directory name */
	u16 cg1_len;     /* cgroup v1 "cpu" hierarchy directory name */
	u16 pad[3];
	/* data: argv | filename | exe | cwd | cg | cg1 */
	u8 data[ARGV_CAP + STR_CAP * 3 + CG_CAP * 2];
};
_Static_assert(__builtin_offsetof(struct exec_rec, data) == 136, "exec_rec layout");

struct fork_rec {
	struct hdr h;        /* the forking process */
	u64 child_start;
	u64 child_pstart;
	u32 child_pid;
	u32 child_ppid;      /* the child's real parent at fork time (differs from h.pid with CLONE_PARENT) */
	u32 child_ns_pid;    /* the child's pid in its own pid namespace (clone(CLONE_NEWPID) makes it 1) */
	u32 pad;
};
_Static_assert(sizeof(struct fork_rec) == 144, "fork_rec layout");

struct exit_rec {
	struct hdr h;
	s32 exit_code;       /* wait status: code << 8, or the signal number */
	u32 pad;
};
_Static_assert(sizeof(struct exit_rec) == 120, "exit_rec layout");

struct sockinfo {
	u16 family;
	u16 type;
	u16 protocol;
	u16 lport;       /* host order */
	u16 rport;       /* host order */
	u8 state;
	u8 pad;
	u8 laddr[16];
	u8 raddr[16];
	u32 pad2;
};

/* String slots of a syscall record. */
enum { S_ARG0, S_ARG1, S_ARG2, S_BASE0, S_BASE1, S_FDPATH, S_SLOTS };

struct sys_rec {
	struct hdr h;
	s64 ret;
	u64 args[6];
	u32 nr;
	u16 slen[S_SLOTS];   /* 0 = absent; user strings (S_ARG*) count their NUL, paths (S_BASE*, S_FDPATH) have none.
			      * data order: arg0, base0, arg1, base1, arg2, fdpath */
	u16 blob_len;
	u16 argv_len;        /* argv of a failed execve, after the blob */
	u32 used;            /* bytes of data in use */
	struct sockinfo sk;
	/* data: present slots in order | blob | argv. Room for any three paths and a failed exec's argv; a
	 * string that does not fit is left out and flagged F_STR_FAULT (it does not happen with real paths). */
	u8 data[SYS_DATA];
};
_Static_assert(__builtin_offsetof(struct sys_rec, sk) == 192, "sys_rec layout");
_Static_assert(__builtin_offsetof(struct sys_rec, data) == 240, "sys_rec layout");

/* ---- what userspace asks for, per syscall number (see _syscalls.py) ---- */
#define NO_ARG 0xff
#define DIRFD_CWD 0xfe     /* a path relative to the cwd only (no dirfd argument) */
#define NOT_PATH 0xfd      /* a string that is not a path (memfd name, fstype) */
#define FROM_RET 0xfe      /* the fd is the return value (accept) */
#define OPEN_HOW 0xfe      /* the open flags are in struct open_how at args[2] (openat2) */

#define D_FAILED_ONLY (1u << 0)  /* emit only when the syscall failed (execve: success is sched_process_exec) */
#define D_ARGV (1u << 1)         /* read argv from args[argv_arg] (failed execve) */

struct sc_desc {
	u8 hooked;
	u8 str_arg[3];       /* argument index of a user string, or NO_ARG */
	u8 str_dirfd[3];     /* argument index of its dirfd, DIRFD_CWD, or NOT_PATH */
	u8 fd_path_arg;      /* argument index of an fd whose path to report, or NO_ARG */
	u8 sock_fd_arg;      /* argument index of a socket fd, FROM_RET, or NO_ARG */
	u8 blob_arg;         /* argument index of a user struct to copy, or NO_ARG */
	u8 blob_len_arg;     /* argument index of its length, or NO_ARG (then blob_size) */
	u8 blob_size;
	u8 open_flags_arg;   /* argument index of open flags, OPEN_HOW, or NO_ARG: enables write-intent filtering */
	u8 argv_arg;
	u8 flags;
	u8 match_arg;        /* argument index that must equal match_val for the call to be reported, or NO_ARG */
	u32 match_val;       /* (bpf(): only BPF_PROG_LOAD is a program load; map lookups are noise) */
};
_Static_assert(sizeof(struct sc_desc) == 20, "sc_desc layout is mirrored in _syscalls.py");

#endif /* ASSAY_RECORDS_H */
