/* LD_PRELOAD shim for the partial-I/O test run: every read and write on a socket moves at most
 * PARTIAL_IO_MAX bytes (default 7) per call, so httpd's handling of short reads and writes is
 * exercised on every path. Files, pipes, eventfds and non-TCP sockets are left alone. On load it writes its PID
 * to the file named by PARTIAL_IO_MARK, so tests can check it is really in place.
 *
 * A real TCP read is short only when the socket's queue is empty, and httpd relies on that
 * (no EAGAIN read after a short one, with edge-triggered epoll). A read cut here leaves bytes
 * (or the FIN) behind that no new edge will announce, so the shim announces them itself: the
 * socket is marked, and the next epoll_wait on its epoll instance reports it readable (EPOLLIN,
 * with the data word httpd registered). */
#define _GNU_SOURCE
#include <linux/kcmp.h>
#include <sys/syscall.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static size_t cap = 7;

__attribute__((constructor)) static void init(void) {
    const char *m = getenv("PARTIAL_IO_MAX");
    if (m && atoi(m) > 0) cap = (size_t)atoi(m);
    const char *mark = getenv("PARTIAL_IO_MARK");
    if (mark) {
        FILE *f = fopen(mark, "a");
        if (f) { fprintf(f, "%d\n", (int)getpid()); fclose(f); }
    }
}

/* TCP sockets only: a netlink request (sock_diag) or a unix datagram cut short is not a
 * short read or write, it is a different message. */
static int is_sock(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return 0;
    int dom = 0, type = 0;
    socklen_t l = sizeof dom;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &l) != 0) return 0;
    l = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) != 0) return 0;
    return (dom == AF_INET || dom == AF_INET6) && type == SOCK_STREAM;
}

#define NEXT(name) static __typeof__(name) *real_##name; if (!real_##name) real_##name = dlsym(RTLD_NEXT, #name)

static size_t lim(int fd, size_t n) { return (is_sock(fd) && n > cap) ? cap : n; }

/* epoll registrations (fd -> epoll fd + 1, data word) and the sockets with bytes left behind by
 * a cut read, in a short list. */
#define MAXFD 65536
#define MAXPENDING 4096
static int reg_ep[MAXFD];
static uint64_t reg_data[MAXFD];
static int pend[MAXPENDING];
static int npend;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void left_behind(int fd, size_t asked, ssize_t got) {
    if (fd < 0 || fd >= MAXFD || got <= 0 || asked <= (size_t)got || (size_t)got < cap) return;
    if (__atomic_load_n(&reg_ep[fd], __ATOMIC_RELAXED) == 0) return;
    char c;
    /* Data or EOF still there: the real recv with MSG_PEEK. */
    static __typeof__(recv) *peek;
    if (!peek) peek = dlsym(RTLD_NEXT, "recv");
    if (peek(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) < 0) return;
    pthread_mutex_lock(&mu);
    int seen = 0;
    for (int i = 0; i < npend; i++) seen |= pend[i] == fd;
    if (!seen && npend < MAXPENDING) pend[npend++] = fd;
    pthread_mutex_unlock(&mu);
}

static void forget(int fd) {
    pthread_mutex_lock(&mu);
    for (int i = 0; i < npend; i++)
        if (pend[i] == fd) pend[i--] = pend[--npend];
    pthread_mutex_unlock(&mu);
}

int epoll_ctl(int ep, int op, int fd, struct epoll_event *ev) {
    NEXT(epoll_ctl);
    int r = real_epoll_ctl(ep, op, fd, ev);
    if (r == 0 && fd >= 0 && fd < MAXFD) {
        if (op == EPOLL_CTL_DEL) { __atomic_store_n(&reg_ep[fd], 0, __ATOMIC_RELAXED); forget(fd); }
        else { reg_data[fd] = ev->data.u64; __atomic_store_n(&reg_ep[fd], ep + 1, __ATOMIC_RELAXED); }
    }
    return r;
}

int close(int fd) {
    NEXT(close);
    if (fd >= 0 && fd < MAXFD && __atomic_load_n(&reg_ep[fd], __ATOMIC_RELAXED)) {
        __atomic_store_n(&reg_ep[fd], 0, __ATOMIC_RELAXED);
        forget(fd);
    }
    return real_close(fd);
}

/* Whether two descriptors are one open file: an epoll instance is often waited on through a
 * duplicate of the descriptor it was registered with (mio's Registry::try_clone, which tokio's
 * reactor uses). */
static int same_file(int a, int b) {
    if (a == b) return 1;
    pid_t me = getpid();
    return syscall(SYS_kcmp, me, me, KCMP_FILE, a, b) == 0;
}

int epoll_wait(int ep, struct epoll_event *evs, int max, int timeout) {
    NEXT(epoll_wait);
    int n = 0;
    if (__atomic_load_n(&npend, __ATOMIC_RELAXED) > 0) {
        pthread_mutex_lock(&mu);
        for (int i = 0; i < npend && n < max; i++) {
            int fd = pend[i];
            if (reg_ep[fd] == 0 || !same_file(reg_ep[fd] - 1, ep)) continue;
            evs[n].events = EPOLLIN;
            evs[n].data.u64 = reg_data[fd];
            n++;
            pend[i--] = pend[--npend];
        }
        pthread_mutex_unlock(&mu);
    }
    if (n == 0) return real_epoll_wait(ep, evs, max, timeout);
    int more = real_epoll_wait(ep, evs + n, max - n, 0);
    return more > 0 ? n + more : n;
}

ssize_t read(int fd, void *b, size_t n) {
    NEXT(read);
    ssize_t r = real_read(fd, b, lim(fd, n));
    if (is_sock(fd)) left_behind(fd, n, r);
    return r;
}
ssize_t write(int fd, const void *b, size_t n) { NEXT(write); return real_write(fd, b, lim(fd, n)); }
ssize_t recv(int fd, void *b, size_t n, int fl) {
    NEXT(recv);
    ssize_t r = real_recv(fd, b, lim(fd, n), fl);
    if (is_sock(fd) && !(fl & MSG_PEEK)) left_behind(fd, n, r);
    return r;
}
ssize_t send(int fd, const void *b, size_t n, int fl) { NEXT(send); return real_send(fd, b, lim(fd, n), fl); }
ssize_t recvfrom(int fd, void *b, size_t n, int fl, struct sockaddr *a, socklen_t *l) {
    NEXT(recvfrom);
    ssize_t r = real_recvfrom(fd, b, lim(fd, n), fl, a, l);
    if (is_sock(fd) && !(fl & MSG_PEEK)) left_behind(fd, n, r);
    return r;
}
ssize_t sendto(int fd, const void *b, size_t n, int fl, const struct sockaddr *a, socklen_t l) {
    NEXT(sendto); return real_sendto(fd, b, lim(fd, n), fl, a, l);
}

/* Vectored calls: keep the first iovecs up to the cap, cutting the last one. */
static int cut_iov(int fd, const struct iovec *in, int cnt, struct iovec *out) {
    if (!is_sock(fd)) { memcpy(out, in, sizeof(struct iovec) * cnt); return cnt; }
    size_t left = cap; int k = 0;
    for (int i = 0; i < cnt && left > 0; i++) {
        out[k] = in[i];
        if (out[k].iov_len > left) out[k].iov_len = left;
        left -= out[k].iov_len;
        k++;
    }
    if (k == 0 && cnt > 0) { out[0] = in[0]; out[0].iov_len = 0; k = 1; }
    return k;
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    NEXT(writev);
    struct iovec v[1024]; if (cnt > 1024) cnt = 1024;
    int k = cut_iov(fd, iov, cnt, v);
    return real_writev(fd, v, k);
}
ssize_t readv(int fd, const struct iovec *iov, int cnt) {
    NEXT(readv);
    struct iovec v[1024]; if (cnt > 1024) cnt = 1024;
    int k = cut_iov(fd, iov, cnt, v);
    return real_readv(fd, v, k);
}
ssize_t sendmsg(int fd, const struct msghdr *m, int fl) {
    NEXT(sendmsg);
    struct iovec v[1024]; struct msghdr c = *m;
    int cnt = (int)(m->msg_iovlen > 1024 ? 1024 : m->msg_iovlen);
    c.msg_iovlen = cut_iov(fd, m->msg_iov, cnt, v); c.msg_iov = v;
    return real_sendmsg(fd, &c, fl);
}
ssize_t recvmsg(int fd, struct msghdr *m, int fl) {
    NEXT(recvmsg);
    struct iovec v[1024]; struct msghdr c = *m;
    int cnt = (int)(m->msg_iovlen > 1024 ? 1024 : m->msg_iovlen);
    c.msg_iovlen = cut_iov(fd, m->msg_iov, cnt, v); c.msg_iov = v;
    ssize_t r = real_recvmsg(fd, &c, fl);
    m->msg_flags = c.msg_flags; m->msg_controllen = c.msg_controllen; m->msg_namelen = c.msg_namelen;
    return r;
}
ssize_t sendfile(int out, int in, off_t *off, size_t n) { NEXT(sendfile); return real_sendfile(out, in, off, lim(out, n)); }
ssize_t sendfile64(int out, int in, off_t *off, size_t n) { NEXT(sendfile64); return real_sendfile64(out, in, off, lim(out, n)); }
