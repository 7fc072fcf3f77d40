// SPDX-License-Identifier: MIT
// cmon-entry: the entry process of the cmon image. It picks what a container runs (cmond,
// arena-exporter, the demo workload, or any command), starts it as a child and does what the
// first process of a container must: pass SIGTERM and the other stop signals on to the child,
// reap every process that is re-parented to it (it is PID 1, or a child subreaper when the
// container joins another one's PID namespace), and exit with the child's status.
//
// Privileges: nothing runs as root. Started as root (compose does that for cmond only, with
// just the capabilities to read the key and change user), cmon-entry reads the key file, makes
// libarena's stats directories as its tmpfiles.d file says (the base must be root's), and then
// becomes the cmon user for good before it writes anything else or starts the child. The key
// is copied to CMON_RUN_DIR as cmond.key (0400, what cmond reads: cmond refuses keys that
// group or others can read) and scrape.key (0440, for a Prometheus that runs with the cmon
// group), so that the mounted secret may have any owner and mode.
//
// `cmon-entry health` is the image's HEALTHCHECK.
#include <httplib.h>

#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <grp.h>
#include <optional>
#include <pwd.h>
#include <string>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace {

constexpr const char* kUsage =
    "Usage: cmon-entry ROLE [ARGS...]\n"
    "The entry process of the cmon image: runs one program as its child, passes stop signals\n"
    "on, reaps orphans, and never runs anything as root (started as root, it becomes\n"
    "CMON_USER after reading the key).\n"
    "\n"
    "Roles (ARGS go to the program):\n"
    "  cmond        cmond --config $CMOND_CONFIG --bind $CMOND_BIND --port $CMOND_PORT\n"
    "               --key-file $CMON_RUN_DIR/cmond.key, the key copied from $CMOND_KEY_FILE\n"
    "  exporter     arena-exporter --listen $ARENA_EXPORTER_LISTEN\n"
    "  demo         arena-run arena-demo: the demo workload on libarena\n"
    "  run CMD      any command\n"
    "  health [cmond|exporter]\n"
    "               one health check (the image's HEALTHCHECK): GET /health with the key, or\n"
    "               GET /metrics; exit 0 if the answer is 200\n"
    "\n"
    "Environment (defaults):\n"
    "  CMON_USER=cmon  CMON_RUN_DIR=/run/cmon  CMOND_KEY_FILE=/run/secrets/cmond_key\n"
    "  CMOND_CONFIG=/etc/cmon/cmond.conf  CMOND_BIND=0.0.0.0  CMOND_PORT=8000\n"
    "  ARENA_EXPORTER_LISTEN=0.0.0.0:9464\n";

constexpr int kKeyHexChars = 64;
// Signals passed on to the child. SIGCHLD is awaited with them.
constexpr int kForwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

std::string env_or(const char* name, const char* fallback) {
    const char* v = getenv(name);
    return v && *v ? v : fallback;
}

void say(const std::string& message) {
    fprintf(stderr, "cmon-entry: %s\n", message.c_str());
}

[[noreturn]] void die(const std::string& message, int status = 1) {
    say(message);
    exit(status);
}

// ---- The key ----

/// Reads a key file of any owner and mode: its 64 hex digits, or nullopt with `error` set
/// (errno in `err`).
std::optional<std::string> load_key(const std::string& path, std::string& error, int& err) {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        err = errno;
        error = strerror(err);
        return std::nullopt;
    }
    struct stat st {};
    if (fstat(fd, &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        char mode[8];
        snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
        say("warning: the key " + path + " has mode " + mode +
            ": group or others can read it (on the host: chmod 600 client_secret.key)");
    }
    char buf[kKeyHexChars + 3] = {};
    ssize_t len = 0;
    while (len < static_cast<ssize_t>(sizeof buf)) {
        const ssize_t n = read(fd, buf + len, sizeof buf - static_cast<size_t>(len));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += n;
    }
    close(fd);
    std::string key(buf, static_cast<size_t>(len));
    explicit_bzero(buf, sizeof buf);
    while (!key.empty() && (key.back() == '\n' || key.back() == '\r'))
        key.pop_back();
    bool hex = key.size() == kKeyHexChars;
    for (const char c : key)
        hex = hex && isxdigit(static_cast<unsigned char>(c));
    if (!hex) {
        explicit_bzero(key.data(), key.size());
        err = 0;
        error = "not 64 hex digits (make a key with: openssl rand -hex 32)";
        return std::nullopt;
    }
    return key;
}

/// The key cmond is to use; dies with the fix when it cannot be read.
std::string read_key(const std::string& path) {
    std::string error;
    int err = 0;
    if (auto key = load_key(path, error, err))
        return std::move(*key);
    if (err == ENOENT)
        die("no key at " + path +
                ": create one on the host with\n"
                "  (umask 077; openssl rand -hex 32 > client_secret.key)\n"
                "and mount it there (compose: the cmond_key secret; docker run: -v "
                "\"$PWD/client_secret.key:" +
                path + ":ro\")",
            2);
    if (err == EACCES && geteuid() != 0)
        die("cannot read the key " + path + " as uid " + std::to_string(geteuid()) +
                ": start the container as root with --cap-add DAC_READ_SEARCH,SETUID,SETGID "
                "(cmon-entry reads the key, then runs cmond as " +
                env_or("CMON_USER", "cmon") + "), or make the file readable by that uid",
            2);
    die("the key " + path + ": " + error, 2);
}

/// Writes `key` to dir/name with `mode`, replacing any older file in one rename.
void write_key(const std::string& dir, const char* name, const std::string& key, mode_t mode) {
    const std::string path = dir + "/" + name;
    const std::string temp = path + ".new";
    unlink(temp.c_str());
    const int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        die("cannot create " + temp + ": " + strerror(errno) + " (CMON_RUN_DIR must be a " +
            "directory the cmon user can write, ideally a tmpfs)");
    const std::string text = key + "\n";
    const bool ok = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                    fchmod(fd, mode) == 0 && fsync(fd) == 0;
    const int e = errno;
    close(fd);
    if (!ok || rename(temp.c_str(), path.c_str()) != 0) {
        unlink(temp.c_str());
        die("cannot write " + path + ": " + strerror(ok ? errno : e));
    }
}

// ---- Privileges ----

/// As systemd-tmpfiles does at boot, for the `d` lines of libarena's tmpfiles.d file
/// (ARENA_TMPFILES): makes each directory if missing and gives it the line's mode and owner,
/// through a descriptor opened without following symlinks. Runs as root, before drop_root(): the
/// stats base must be root's (a base owned by the cmon user would let that user steer root's
/// pages). Containers started as another user skip it; libarena then makes what it needs.
void apply_tmpfiles() {
    const std::string path = env_or("ARENA_TMPFILES", "/usr/local/lib/tmpfiles.d/arena.conf");
    FILE* f = fopen(path.c_str(), "re");
    if (f == nullptr)
        return; // an image without libarena's file: nothing to make
    char line[512];
    while (fgets(line, sizeof line, f) != nullptr) {
        char type[8], dir[256], mode[8], owner[64], owner_group[64];
        if (line[0] == '#' ||
            sscanf(line, "%7s %255s %7s %63s %63s", type, dir, mode, owner, owner_group) != 5 ||
            std::string(type) != "d")
            continue;
        const passwd* pw = getpwnam(owner);
        const struct group* gr = getgrnam(owner_group);
        char* end = nullptr;
        const unsigned long bits = strtoul(mode, &end, 8);
        if (pw == nullptr || gr == nullptr || end == mode || *end != '\0' || bits > 07777) {
            say("warning: " + path + ": cannot apply '" + std::string(dir) + "'");
            continue;
        }
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            say("warning: cannot make " + std::string(dir) + ": " + strerror(errno));
            continue;
        }
        const int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || fchown(fd, pw->pw_uid, gr->gr_gid) != 0 ||
            fchmod(fd, static_cast<mode_t>(bits)) != 0)
            say("warning: cannot set up " + std::string(dir) + ": " + strerror(errno));
        if (fd >= 0)
            close(fd);
    }
    fclose(f);
}

/// Started as root: become CMON_USER (all groups dropped, no capabilities left). Otherwise
/// keep the user the container was started with.
void drop_root() {
    if (geteuid() != 0 && getuid() != 0)
        return;
    apply_tmpfiles();
    const std::string name = env_or("CMON_USER", "cmon");
    errno = 0;
    const passwd* pw = getpwnam(name.c_str());
    if (!pw)
        die("no user '" + name + "' to run as (CMON_USER); refusing to run as root");
    if (pw->pw_uid == 0)
        die("CMON_USER '" + name + "' is root; refusing to run as root");
    const uid_t uid = pw->pw_uid;
    const gid_t gid = pw->pw_gid;
    if (setgroups(0, nullptr) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
        die(std::string("cannot become ") + name + ": " + strerror(errno));
    if (setuid(0) == 0)
        die("still able to become root after dropping privileges; stopping");
    setenv("HOME", pw->pw_dir, 1);
    setenv("USER", name.c_str(), 1);
}

// ---- Supervision ----

/// Runs argv as a child in its own process group, passes the stop signals on, reaps orphans,
/// and returns the exit status for the container (128 + N when the child died of signal N).
int supervise(std::vector<std::string> args) {
    // Not PID 1 (a container sharing another one's PID namespace): still the reaper of what
    // the child leaves behind.
    if (getpid() != 1)
        prctl(PR_SET_CHILD_SUBREAPER, 1);

    sigset_t awaited;
    sigemptyset(&awaited);
    sigaddset(&awaited, SIGCHLD);
    for (const int s : kForwarded)
        sigaddset(&awaited, s);
    sigset_t previous;
    sigprocmask(SIG_BLOCK, &awaited, &previous);

    std::vector<char*> argv;
    for (auto& a : args)
        argv.push_back(a.data());
    argv.push_back(nullptr);

    const pid_t child = fork();
    if (child < 0)
        die(std::string("fork: ") + strerror(errno));
    if (child == 0) {
        // Its own process group: a Ctrl-C on `docker run -it` reaches cmon-entry only, which
        // passes it on once (cmond takes a second SIGINT as "kill the commands now").
        setpgid(0, 0);
        sigprocmask(SIG_SETMASK, &previous, nullptr);
        execvp(argv[0], argv.data());
        fprintf(stderr, "cmon-entry: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    setpgid(child, child);
    say("started " + args[0] + " (pid " + std::to_string(child) + ") as uid " +
        std::to_string(getuid()));

    for (;;) {
        siginfo_t info{};
        const int sig = sigwaitinfo(&awaited, &info);
        if (sig < 0)
            continue;
        if (sig != SIGCHLD) {
            if (sig != SIGWINCH)
                say(std::string(strsignal(sig)) + ": passing it on to " + args[0]);
            kill(child, sig);
            continue;
        }
        // Reap everything that ended: the child, and orphans re-parented to us.
        for (;;) {
            int status = 0;
            const pid_t pid = waitpid(-1, &status, WNOHANG);
            if (pid <= 0)
                break;
            if (pid != child)
                continue;
            if (WIFEXITED(status)) {
                say(args[0] + " exited with status " + std::to_string(WEXITSTATUS(status)));
                return WEXITSTATUS(status);
            }
            if (WIFSIGNALED(status)) {
                say(args[0] + " was killed by " + strsignal(WTERMSIG(status)));
                return 128 + WTERMSIG(status);
            }
        }
    }
}

// ---- Roles ----

int run_cmond(int argc, char** argv) {
    const std::string run_dir = env_or("CMON_RUN_DIR", "/run/cmon");
    std::string key = read_key(env_or("CMOND_KEY_FILE", "/run/secrets/cmond_key"));
    drop_root(); // before anything is written
    umask(077);
    write_key(run_dir, "cmond.key", key, 0400);
    write_key(run_dir, "scrape.key", key, 0440);
    explicit_bzero(key.data(), key.size());

    std::vector<std::string> args = {"cmond",
                                     "--config",
                                     env_or("CMOND_CONFIG", "/etc/cmon/cmond.conf"),
                                     "--bind",
                                     env_or("CMOND_BIND", "0.0.0.0"),
                                     "--port",
                                     env_or("CMOND_PORT", "8000"),
                                     "--key-file",
                                     run_dir + "/cmond.key"};
    args.insert(args.end(), argv, argv + argc);
    return supervise(args);
}

int run_role(const std::vector<std::string>& head, int argc, char** argv) {
    drop_root();
    std::vector<std::string> args = head;
    args.insert(args.end(), argv, argv + argc);
    return supervise(args);
}

/// A TCP port number, or the one at the end of HOST:PORT / [V6]:PORT; dies on anything else.
int port_of(const std::string& text) {
    const size_t colon = text.rfind(':');
    const std::string digits = colon == std::string::npos ? text : text.substr(colon + 1);
    const int port = digits.empty() || digits.size() > 5 ||
                             digits.find_first_not_of("0123456789") != std::string::npos
                         ? 0
                         : atoi(digits.c_str());
    if (port <= 0 || port > 65535)
        die("cannot take a port from '" + text + "'");
    return port;
}

int health(const std::string& what) {
    httplib::Headers headers;
    std::string path;
    int port = 0;
    if (what == "cmond") {
        port = port_of(env_or("CMOND_PORT", "8000"));
        const std::string key_path = env_or("CMON_RUN_DIR", "/run/cmon") + "/cmond.key";
        std::string error;
        int err = 0;
        auto key = load_key(key_path, error, err);
        if (!key) {
            printf("unhealthy: the key %s: %s\n", key_path.c_str(), error.c_str());
            return 1;
        }
        headers.emplace("access_token", *key);
        explicit_bzero(key->data(), key->size());
        path = "/health";
    } else if (what == "exporter") {
        port = port_of(env_or("ARENA_EXPORTER_LISTEN", "0.0.0.0:9464"));
        path = "/metrics";
    } else {
        die("health: expected cmond or exporter, got '" + what + "'");
    }
    httplib::Client client("127.0.0.1", port);
    client.set_connection_timeout(3);
    client.set_read_timeout(5);
    const auto res = client.Get(path.c_str(), headers);
    if (!res) {
        printf("unhealthy: GET %s on port %d: %s\n", path.c_str(), port,
               httplib::to_string(res.error()).c_str());
        return 1;
    }
    if (res->status != 200) {
        printf("unhealthy: GET %s on port %d answered %d\n", path.c_str(), port, res->status);
        return 1;
    }
    printf("healthy: GET %s answered 200\n", path.c_str());
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2)
        die(std::string("no role given\n") + kUsage, 2);
    const std::string role = argv[1];
    const int rest_argc = argc - 2;
    char** rest = argv + 2;
    if (role == "--help" || role == "-h") {
        fputs(kUsage, stdout);
        return 0;
    }
    if (role == "cmond")
        return run_cmond(rest_argc, rest);
    if (role == "exporter")
        return run_role(
            {"arena-exporter", "--listen", env_or("ARENA_EXPORTER_LISTEN", "0.0.0.0:9464")},
            rest_argc, rest);
    if (role == "demo")
        return run_role({"arena-run", "arena-demo"}, rest_argc, rest);
    if (role == "run") {
        if (rest_argc < 1)
            die("run: which command?", 2);
        return run_role({}, rest_argc, rest);
    }
    if (role == "health")
        return health(rest_argc >= 1 ? rest[0] : "cmond");
    die("unknown role '" + role + "'\n" + kUsage, 2);
}
