/* What a checkpoint device may ask of the replicator (ckpt_device.h),
 * answered here from struct replicator (the link, the protection state,
 * verify, a few flags), so that a device never reads it itself. The
 * pipeline's own requests (early epoch, output waiting, frames of an
 * epoch) are in epoch.c. */
#include "ckpt_device.h"
#include "replicator.h"

bool ckpt_link_up(const struct ckpt_ctx *cx)
{
	return peer_link_up(&replicator_of(cx)->link);
}

uint64_t ckpt_link_queued(const struct ckpt_ctx *cx)
{
	return replicator_of(cx)->link.out.bytes_queued;
}

uint64_t ckpt_link_sent(const struct ckpt_ctx *cx)
{
	return replicator_of(cx)->link.out.bytes_sent;
}

void ckpt_link_pulse(struct ckpt_ctx *cx)
{
	peer_link_pulse(&replicator_of(cx)->link);
}

bool ckpt_stopping(const struct ckpt_ctx *cx)
{
	return replicator_of(cx)->stopping;
}

bool ckpt_barriers_coming(const struct ckpt_ctx *cx)
{
	const struct replicator *r = replicator_of(cx);

	return peer_link_up(&r->link) && !r->stopping && prot_barriers_coming(&r->state);
}

bool ckpt_initial_sync_running(const struct ckpt_ctx *cx)
{
	const struct replicator *r = replicator_of(cx);

	return peer_link_up(&r->link) && prot_link(&r->state) == PROT_SYNCING;
}

bool ckpt_vm_gone(const struct ckpt_ctx *cx)
{
	return replicator_of(cx)->vm_gone;
}

bool ckpt_backup_takes_lz4(const struct ckpt_ctx *cx)
{
	return replicator_of(cx)->agent_pages_lz4;
}

int ckpt_push_unbuffered(struct ckpt_ctx *cx, unsigned type, uint64_t epoch,
			 const struct iovec *iov, int iovcnt, void *owned)
{
	return link_push(replicator_of(cx), type, epoch, iov, iovcnt, owned, NULL);
}

void ckpt_resync(struct ckpt_ctx *cx, const char *why)
{
	link_drop_alive(replicator_of(cx), why);
}

void ckpt_delta_done(struct ckpt_ctx *cx)
{
	link_delta_free(replicator_of(cx));
}

int ckpt_give_to_qemu(struct ckpt_ctx *cx, const char *path)
{
	return replicator_give_to_qemu(replicator_of(cx), path);
}

void ckpt_read_qemu_events(struct ckpt_ctx *cx)
{
	replicator_qemu_events(replicator_of(cx));
}

void ckpt_verify_at_barrier(struct ckpt_ctx *cx, const uint8_t *ram,
			    const struct ram_holes *holes, size_t npages, uint64_t epoch)
{
	verify_at_barrier(replicator_of(cx), ram, holes, npages, epoch);
}

int ckpt_verify_resends(struct ckpt_ctx *cx, struct epoch_tally *t)
{
	return verify_send_resends(replicator_of(cx), t);
}
