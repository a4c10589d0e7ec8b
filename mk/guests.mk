# guests.mk — guests nobody here wrote (docs/guests.md).
#
#   make guests        Debian's memtest86+ (memtest86+x64.bin) and grub-invaders
#                      (invaders.exec), fetched with apt-get download into
#                      $(CACHE)/guests (scripts/guests-debian.sh; cached)
#
# The tests read them through MICROVM_MEMTEST and MICROVM_GRUB_INVADERS
# (vmm/thirdparty_test.go); internal/rigsuite carries them into the rig.

TEST_PREREQS += guests

TEST_ENV += MICROVM_MEMTEST=$(CACHE)/guests/memtest86+x64.bin \
	MICROVM_GRUB_INVADERS=$(CACHE)/guests/invaders.exec

.PHONY: guests

guests:
	@scripts/guests-debian.sh $(CACHE)/guests
