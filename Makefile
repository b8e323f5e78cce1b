# make deb    builds the Debian packages (dpkg-buildpackage -us -uc -b) from a
#             copy of the working tree; the .deb files land in $(DEB_OUT).
# make lintian runs lintian on them.
# Cargo's target directory is CARGO_TARGET_DIR if set, else ./target (shared with
# ordinary builds, so a release build already done is reused).

SHELL := /bin/bash
TOP := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
export CARGO_TARGET_DIR ?= $(TOP)/target
VERSION := $(shell sed -n 's/^version *= *"\(.*\)"/\1/p' $(TOP)/Cargo.toml | head -n1)
DEB_VERSION = $(shell dpkg-parsechangelog -l $(TOP)/debian/changelog -S Version)
DEB_OUT ?= $(CARGO_TARGET_DIR)/deb
SRC := $(DEB_OUT)/src/saslgate-$(VERSION)

.PHONY: deb lintian check-version clean-deb

check-version:
	@test "$(VERSION)" = "$(DEB_VERSION)" || { echo "version mismatch: Cargo.toml $(VERSION), debian/changelog $(DEB_VERSION)" >&2; exit 1; }

deb: check-version
	rm -rf $(DEB_OUT)/src && mkdir -p $(SRC)
	rm -f $(DEB_OUT)/*.deb $(DEB_OUT)/*.ddeb $(DEB_OUT)/*.changes $(DEB_OUT)/*.buildinfo
	cd $(TOP) && git ls-files -z --cached --others --exclude-standard \
	  | tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C $(SRC)
	cd $(SRC) && dpkg-buildpackage -us -uc -b
	mv $(DEB_OUT)/src/*.deb $(DEB_OUT)/src/*.changes $(DEB_OUT)/src/*.buildinfo $(DEB_OUT)/
	-mv $(DEB_OUT)/src/*.ddeb $(DEB_OUT)/ 2>/dev/null
	ls -l $(DEB_OUT)/*.deb

lintian:
	lintian --fail-on error --info --display-info $(DEB_OUT)/*.changes

clean-deb:
	rm -rf $(DEB_OUT)
