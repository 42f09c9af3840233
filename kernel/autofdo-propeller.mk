# The AutoFDO and Propeller link options of Linux 7.x for a CONFIG_LTO_CLANG_THIN build, as its
# scripts/Makefile.autofdo and scripts/Makefile.propeller add them to KBUILD_LDFLAGS (Linux 6.12
# has neither file). `kernel/build-and-boot.sh --autofdo-propeller` includes this file at the
# end of the tree's Makefile and names a profile in CLANG_AUTOFDO_PROFILE, 7.x's variable.
ifdef CONFIG_LTO_CLANG_THIN
ifdef CLANG_AUTOFDO_PROFILE
# Makefile.autofdo, with a profile.
KBUILD_LDFLAGS += --lto-sample-profile=$(CLANG_AUTOFDO_PROFILE)
KBUILD_LDFLAGS += --mllvm=-enable-fs-discriminator=true --mllvm=-improved-fs-discriminator=true -plugin-opt=thinlto
KBUILD_LDFLAGS += -plugin-opt=-split-machine-functions
# Makefile.propeller without a profile, for lld >= 20. 7.x filters -split-machine-functions
# back out when Propeller is on too; it stays here so that one build exercises both.
KBUILD_LDFLAGS += --lto-basic-block-address-map
endif
endif
