# Remus-style VM replicator. `make` builds, `make check` runs every test,
# `make demo` replicates the bundled test guest and fails it over,
# `make install` installs (PREFIX, DESTDIR ...: see "Install" below),
# `make deb` builds the Debian package. Quiet by default; `make V=1` shows
# the commands.

CC      ?= gcc
# The user's (or dpkg-buildflags') CPPFLAGS, CFLAGS and LDFLAGS come last,
# after ours, so that they can override them; ours never replace them.
CFLAGS  ?= -O2 -g
CPPFLAGS ?=
LDFLAGS ?=
PKGS    := json-c libvirt libvirt-qemu libxml-2.0 libsystemd gnutls libxxhash liblz4 libnbd
LDLIBS  := $(shell pkg-config --libs $(PKGS)) -lev -lpthread
CHECK_LIBS := $(shell pkg-config --libs check)

# -Werror in the developer build and CI only: `make check` (what CI runs),
# the unit tests' ASan build and the fuzzers always have it; `make` and
# `make install` warn but go on, so that a newer compiler's new warning
# does not stop a user or a packager. `make WERROR=1` for the developer.
WERROR  ?= 0
WARNINGS := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wno-unused-parameter
# Hardening, on by default (HARDEN=0 leaves it out): _FORTIFY_SOURCE only
# where it works, with optimisation, and not if the user's flags chose
# their own level; PIE, stack protector, full RELRO (-z now).
HARDEN  ?= 1
OPTIMISED := $(filter-out -O0,$(lastword $(filter -O%,$(CFLAGS))))
FORTIFY := $(if $(and $(OPTIMISED),$(if $(findstring _FORTIFY_SOURCE,$(CPPFLAGS) $(CFLAGS)),,1)),\
             -D_FORTIFY_SOURCE=2)
HARDEN_CPPFLAGS := $(if $(filter 1,$(HARDEN)),$(FORTIFY))
HARDEN_CFLAGS   := $(if $(filter 1,$(HARDEN)),-fstack-protector-strong -fPIE)
RELRO_NOW       := -Wl,-z,relro,-z,now
HARDEN_LDFLAGS  := $(if $(filter 1,$(HARDEN)),-pie $(RELRO_NOW))

BASE_CPPFLAGS := -D_GNU_SOURCE -Icommon -Inet-buffer $(shell pkg-config --cflags libxml-2.0 gnutls)
ALL_CPPFLAGS = $(BASE_CPPFLAGS) $(HARDEN_CPPFLAGS) $(CPPFLAGS)
ALL_CFLAGS   = -std=gnu11 $(WARNINGS) $(if $(filter 1,$(WERROR)),-Werror) $(HARDEN_CFLAGS) \
               -MMD -MP $(CFLAGS)
ALL_LDFLAGS  = $(HARDEN_LDFLAGS) $(LDFLAGS)
# ASan/UBSan (unit tests): always -Werror; no _FORTIFY_SOURCE, whose
# __memcpy_chk and kin would go round ASan's interceptors.
SAN     := -Werror -U_FORTIFY_SOURCE -fsanitize=address,undefined -fno-omit-frame-pointer \
           -fno-sanitize-recover=undefined

# The version: the file VERSION, the one place it is written; a git
# checkout at or after a tag vX.Y.Z says so (git describe); REMUS_VERSION=
# on the command line wins (debian/rules gives the package's).
REMUS_VERSION ?= $(or $(patsubst v%,%,$(shell git describe --tags --match 'v[0-9]*' --dirty \
                   2>/dev/null)),$(shell cat VERSION))
VERSION_CPPFLAGS := -DREMUS_VERSION='"$(REMUS_VERSION)"'

ifeq ($(V),1)
Q :=
else
Q := @
endif

B := build
# make check's build and make analyze use every core
NPROC := $(shell nproc 2>/dev/null || echo 1)
# One library per folder; each folder's main.c (if any) is its program.
MODULES   := common net-buffer replicator backup-agent remusctl
lib_srcs   = $(filter-out $(1)/main.c,$(wildcard $(1)/*.c))
objs       = $(patsubst %.c,$(2)/%.o,$(call lib_srcs,$(1)))
ALL_LIB_SRCS := $(foreach m,$(MODULES),$(call lib_srcs,$(m)))

PROGRAMS := $(B)/bin/remus-replicator $(B)/bin/remus-agent $(B)/bin/remusctl
# Tools the integration tests use (tests/tools/*.c, one program each).
TEST_TOOLS := $(patsubst tests/tools/%.c,$(B)/tests/%,$(wildcard tests/tools/*.c))
# LD_PRELOAD shims they put under a daemon (tests/preload/*.c): failures
# this machine cannot make for real.
TEST_PRELOADS := $(patsubst tests/preload/%.c,$(B)/tests/%.so,$(wildcard tests/preload/*.c))
TESTS    := $(patsubst tests/%.c,$(B)/asan/%,$(wildcard tests/check_*.c))

all: $(PROGRAMS) $(TEST_TOOLS) $(TEST_PRELOADS)

# Objects are made again when the flags change (a `make check` after a
# plain `make`, other CFLAGS): $(B)/.flags holds the last ones, and is
# rewritten only when they differ (git's GIT-CFLAGS). The version is not
# in it: only cli.c uses it, and it has its own ($(B)/.version).
FLAGS_NOW = $(CC) $(ALL_CPPFLAGS) $(ALL_CFLAGS) $(ALL_LDFLAGS) $(LDLIBS)
$(B)/.flags: FORCE
	@mkdir -p $(B)
	@flags='$(subst ','\'',$(FLAGS_NOW))'; \
	if [ "$$flags" != "$$(cat $@ 2>/dev/null)" ]; then echo "$$flags" > $@; fi
$(B)/.version: FORCE
	@mkdir -p $(B)
	@if [ '$(REMUS_VERSION)' != "$$(cat $@ 2>/dev/null)" ]; then echo '$(REMUS_VERSION)' > $@; fi
$(B)/common/cli.o $(B)/asan/common/cli.o: $(B)/.version

$(B)/%.o: %.c $(B)/.flags
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALL_CPPFLAGS) $(VERSION_CPPFLAGS) $(ALL_CFLAGS) -c -o $@ $<

$(B)/asan/%.o: %.c $(B)/.flags
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC-SAN  $<")
	$(Q)$(CC) $(ALL_CPPFLAGS) $(VERSION_CPPFLAGS) $(ALL_CFLAGS) $(SAN) -c -o $@ $<

$(B)/bin/remus-replicator: $(B)/replicator/main.o $(call objs,replicator,$(B)) $(call objs,net-buffer,$(B)) $(call objs,common,$(B))
$(B)/bin/remus-agent: $(B)/backup-agent/main.o $(call objs,backup-agent,$(B)) $(call objs,common,$(B))
$(B)/bin/remusctl: $(B)/remusctl/main.o $(call objs,remusctl,$(B)) $(call objs,common,$(B))
$(B)/tests/%.so: tests/preload/%.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_CFLAGS) -shared -fPIC -o $@ $< -ldl
$(B)/tests/%: $(B)/tests/tools/%.o $(call objs,common,$(B))
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS)
$(PROGRAMS):
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS)

# Unit tests: every library object, built with ASan/UBSan, linked into each
# tests/check_<module> binary.
$(B)/asan/check_%: $(B)/asan/tests/check_%.o $(patsubst %.c,$(B)/asan/%.o,$(ALL_LIB_SRCS))
	@$(if $(Q),echo "  LD-SAN  $@")
	$(Q)$(CC) $(ALL_CFLAGS) $(SAN) $(ALL_LDFLAGS) $(TEST_WRAP) -o $@ $^ $(CHECK_LIBS) $(LDLIBS)
# A failing disk, for the tests of what a write-back error does: the test
# defines __wrap_sync_file_range.
$(B)/asan/check_replica_disk: TEST_WRAP = -Wl,--wrap=sync_file_range
# How often the bitmap capture asks the file system for holes: the test
# counts lseek.
$(B)/asan/check_dirty_ranges: TEST_WRAP = -Wl,--wrap=lseek

# libFuzzer harnesses, one per parser of outside bytes (fuzz/fuzz_*.c).
# `make fuzz` builds them; `make fuzz-run` (part of `make check`) runs each
# for FUZZ_SECONDS from its seeds, and fails on any crash, leak, sanitizer
# report or timeout (scripts/run-fuzzers). Needs clang and
# libclang-rt-14-dev. How to run one by hand: the comment at the top of its
# file. UBSan stops at its first report, as in the unit tests.
FUZZ_CC    := clang
FUZZ_FLAGS  = $(BASE_CPPFLAGS) $(VERSION_CPPFLAGS) $(CPPFLAGS) -std=gnu11 $(WARNINGS) -Werror \
              $(CFLAGS) -U_FORTIFY_SOURCE -fsanitize=fuzzer,address,undefined \
              -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_LIBS  := $(shell pkg-config --libs json-c libxxhash liblz4)
FUZZ_SECONDS ?= 20
FUZZERS    := $(patsubst fuzz/%.c,$(B)/fuzz/%,$(wildcard fuzz/fuzz_*.c))
fuzz: $(FUZZERS)
$(B)/fuzz/fuzz_restore_verify: fuzz/fuzz_restore_verify.c backup-agent/restore_verify.c common/qmp.c \
                           common/log.c common/text.c
$(B)/fuzz/fuzz_config: fuzz/fuzz_config.c common/config.c common/cli.c common/netaddr.c
$(B)/fuzz/fuzz_disk_frame: fuzz/fuzz_disk_frame.c common/proto.c common/crc32c.c
$(B)/fuzz/fuzz_nbd: fuzz/fuzz_nbd.c common/nbd_server.c common/log.c common/text.c
$(B)/fuzz/fuzz_frame: fuzz/fuzz_frame.c common/proto.c common/crc32c.c
$(B)/fuzz/fuzz_frame_kind: fuzz/fuzz_frame_kind.c net-buffer/frame_kind.c
$(B)/fuzz/fuzz_page_codec: fuzz/fuzz_page_codec.c common/page_codec.c common/proto.c common/crc32c.c
$(B)/fuzz/fuzz_hello: fuzz/fuzz_hello.c backup-agent/replica.c backup-agent/disk_base.c backup-agent/journal.c \
                      backup-agent/sparse_copy.c \
                      backup-agent/diskfile.c backup-agent/pair.c common/proto.c common/crc32c.c \
                      common/log.c common/text.c common/procfs.c common/page_hash.c \
                      common/page_codec.c common/verify_blocks.c
$(B)/fuzz/fuzz_journal: fuzz/fuzz_journal.c backup-agent/journal.c backup-agent/diskfile.c \
                        common/crc32c.c
$(B)/fuzz/fuzz_qmp: fuzz/fuzz_qmp.c common/qmp.c common/log.c common/text.c
$(B)/fuzz/fuzz_peer_state: fuzz/fuzz_peer_state.c backup-agent/cold_facts.c
$(FUZZERS): $(B)/.flags $(B)/.version
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZ    $@")
	$(Q)$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $(filter %.c,$^) $(FUZZ_LIBS)

fuzz-run: $(FUZZERS)
	$(Q)FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/run-fuzzers $(FUZZERS)

# Clang's static analyzer over every program's sources, built in a
# directory of its own (wiped first: scan-build sees only what it
# compiles, and an unchanged file must be looked at again); any report
# fails. The HTML reports stay in $(B)/scan-build.
SCAN_BUILD ?= scan-build
analyze:
	$(Q)rm -rf $(B)/analyze
	$(Q)$(SCAN_BUILD) --status-bugs -o $(B)/scan-build \
		$(MAKE) --no-print-directory -j$(NPROC) B=$(B)/analyze all

GUEST := $(B)/guest
guest: $(GUEST)/initrd.img
$(GUEST)/initrd.img: scripts/make-test-guest $(wildcard scripts/guest/*)
	$(Q)scripts/make-test-guest $(GUEST)

unit: $(TESTS)
	$(Q)scripts/run-unit-tests $(TESTS)

# The man pages against the programs (tests/check_manpages.sh): every long
# option a program's --help prints and every key the config parser accepts
# is in its page, every page renders without a warning, and --version
# prints this version. Light: no root, no QEMU.
doc-check: $(PROGRAMS)
	$(Q)CC="$(CC)" REMUS_VERSION='$(REMUS_VERSION)' tests/check_manpages.sh $(B)/bin

integration: all guest
	$(Q)tests/integration/run-all

# `make check` first installs what is missing (make deps: the README's path
# on a fresh machine); NO_DEPS=1 leaves the system's packages alone (a
# packager, a machine set up already). It builds with -Werror, every
# binary first, on every core; then runs the tests one kind at a time
# (the integration tests time real VMs: nothing else may load the host).
check: $(if $(filter 1,$(NO_DEPS)),,deps nested-qemu)
	$(Q)$(MAKE) --no-print-directory -j$(NPROC) WERROR=1 all $(TESTS) $(FUZZERS) guest
	$(Q)$(MAKE) --no-print-directory WERROR=1 all unit doc-check analyze fuzz-run integration

deps:
	$(Q)scripts/install-deps

# The emulator of the nested test host (QEMU 10 from bookworm-backports,
# unpacked into build/nested-qemu, not installed): the KVM tests need it
# and skip, saying so, without it; the soft-dirty tests run on it too.
nested-qemu: $(if $(filter 1,$(NO_DEPS)),,deps)
	$(Q)scripts/nested-host-qemu > /dev/null || \
		echo "make: no QEMU 10 for the nested test host: test_kvm.sh will skip" >&2

demo: deps
	$(Q)$(MAKE) --no-print-directory all guest
	$(Q)scripts/demo

bench: all guest
	$(Q)bench/run-all

# ---- Install ----
# make install [PREFIX=/usr/local] [DESTDIR=...]; every directory below can
# be given on its own. The daemons run as root and go to SBINDIR;
# remusctl, which members of a control group may run too, to BINDIR. The
# config directory is SYSCONFDIR/remus (/etc/remus, whatever PREFIX),
# where the units look for PAIR.conf; the agent's state directories go
# under LOCALSTATEDIR/lib/remus (/var/lib/remus). The systemd units are
# written from configs/systemd/*.service.in with these paths.
PREFIX        ?= /usr/local
BINDIR        ?= $(PREFIX)/bin
SBINDIR       ?= $(PREFIX)/sbin
sysconfdir    ?= /etc
SYSCONFDIR    ?= $(sysconfdir)
LOCALSTATEDIR ?= /var
DATADIR       ?= $(PREFIX)/share
MANDIR        ?= $(DATADIR)/man
DOCDIR        ?= $(DATADIR)/doc/remus-ha
# systemd reads /usr/local/lib/systemd/system too; the Debian package
# gives /lib/systemd/system.
UNITDIR       ?= $(PREFIX)/lib/systemd/system
# bash-completion finds PREFIX/share/bash-completion/completions through
# XDG_DATA_DIRS (/usr/local/share:/usr/share by default).
BASHCOMPDIR   ?= $(DATADIR)/bash-completion/completions
# Pacemaker looks for resource agents under OCF_ROOT/resource.d/PROVIDER
# (/usr/lib/ocf, whatever PREFIX): ocf:remus:remus.
OCFDIR        ?= /usr/lib/ocf/resource.d/remus
INSTALL       ?= install

UNITS    := $(patsubst configs/systemd/%.in,%,$(wildcard configs/systemd/*.service.in))
MANPAGES := $(wildcard man/*.[0-9])

install: $(PROGRAMS)
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(BASHCOMPDIR) \
		$(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(SYSCONFDIR)/remus \
		$(DESTDIR)$(LOCALSTATEDIR)/lib/remus $(DESTDIR)$(OCFDIR)
	$(INSTALL) -m 0755 $(B)/bin/remus-replicator $(B)/bin/remus-agent $(DESTDIR)$(SBINDIR)/
	$(INSTALL) -m 0755 $(B)/bin/remusctl $(DESTDIR)$(BINDIR)/
	sed -e 's|^SBIN=$${OCF_RESKEY_sbindir:-/usr/sbin}|SBIN=$${OCF_RESKEY_sbindir:-$(SBINDIR)}|' \
		-e 's|^BIN_DEFAULT=/usr/bin$$|BIN_DEFAULT=$(BINDIR)|' \
		-e 's|<content type="string" default="/usr/sbin"/>|<content type="string" default="$(SBINDIR)"/>|' \
		scripts/ocf/remus > $(DESTDIR)$(OCFDIR)/remus && chmod 0755 $(DESTDIR)$(OCFDIR)/remus
	$(INSTALL) -m 0644 $(filter %.5,$(MANPAGES)) $(DESTDIR)$(MANDIR)/man5/
	$(INSTALL) -m 0644 $(filter %.8,$(MANPAGES)) $(DESTDIR)$(MANDIR)/man8/
	$(foreach u,$(UNITS),sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@BINDIR@|$(BINDIR)|g' \
		-e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' -e 's|@LOCALSTATEDIR@|$(LOCALSTATEDIR)|g' \
		configs/systemd/$(u).in > $(DESTDIR)$(UNITDIR)/$(u) && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$(u) &&) true
	$(INSTALL) -m 0644 configs/bash-completion/remus $(DESTDIR)$(BASHCOMPDIR)/remusctl
	ln -sf remusctl $(DESTDIR)$(BASHCOMPDIR)/remus-replicator
	ln -sf remusctl $(DESTDIR)$(BASHCOMPDIR)/remus-agent
	$(INSTALL) -m 0644 configs/pair-qemu.conf configs/pair-libvirt.conf configs/pair-hosts.conf \
		configs/pair-pacemaker.conf \
		$(DESTDIR)$(DOCDIR)/examples/
	$(INSTALL) -m 0644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/remus-replicator $(DESTDIR)$(SBINDIR)/remus-agent \
		$(DESTDIR)$(BINDIR)/remusctl \
		$(addprefix $(DESTDIR)$(MANDIR)/man5/,$(notdir $(filter %.5,$(MANPAGES)))) \
		$(addprefix $(DESTDIR)$(MANDIR)/man8/,$(notdir $(filter %.8,$(MANPAGES)))) \
		$(addprefix $(DESTDIR)$(UNITDIR)/,$(UNITS)) \
		$(addprefix $(DESTDIR)$(BASHCOMPDIR)/,remusctl remus-replicator remus-agent) \
		$(DESTDIR)$(OCFDIR)/remus
	rm -rf $(DESTDIR)$(DOCDIR)

# The Debian package (debian/), built in debian/build with the unit tests
# and doc-check as its test step; the .deb and its .changes/.buildinfo
# land in $(B)/deb. Needs dpkg-dev and debhelper (not in make deps).
deb:
	$(Q)dpkg-buildpackage -us -uc -b
	$(Q)mkdir -p $(B)/deb && v=$$(dpkg-parsechangelog -S Version) && \
	for f in ../remus-ha_$${v}_* ../remus-ha-dbgsym_$${v}_*; do \
		if [ -e "$$f" ]; then mv "$$f" $(B)/deb/; fi; \
	done; ls -l $(B)/deb

clean:
	rm -rf $(B)

.PHONY: all guest unit doc-check integration check deps nested-qemu demo bench fuzz fuzz-run analyze \
	install uninstall deb clean FORCE
.SECONDARY:
-include $(shell find $(B) -name '*.d' 2>/dev/null)
