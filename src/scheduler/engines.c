/*
 * engines.c - the engine instances the batcher feeds: one per GPU in the device list (cuda), or
 * one (cpu, identity); their warm-up before the supervisor reports ready; and model reload.
 *
 * Reload builds the new model's instances on a helper thread (loading and uploading can take
 * seconds) and warms them up; only then does the loop swap them in: new batches go to the new
 * instances, batches in flight finish on the old ones, which are destroyed once idle. A model
 * that fails to load or warm up leaves the old one serving.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "inst.h"
#include "log.h"
#include "model/model.h"
#include "sup.h"

struct loaded {
    struct inst *inst[SUP_MAX_INST / 2];
    uint32_t n;
    struct oag_model *model;
    char name[64];
};

/* Frees m unless one of the supervisor's instances still serves it: a model lives exactly as
 * long as its instances (one per GPU, plus retired ones finishing their batches). */
static void model_release_if_unused(struct sup *s, struct oag_model *m)
{
    if (!m)
        return;
    for (uint32_t i = 0; i < s->ninst; i++)
        if (s->inst[i]->model == m)
            return;
    oag_model_free(m);
}

/* Runs one batch of n zero rows through in and waits for it. Returns 0 or a negative errno. */
static int warm_one(struct sup *s, struct inst *in, uint32_t n, uint32_t row_bytes)
{
    struct bslot *bs = bslot_new(s, in);
    if (!bs)
        return -ENOMEM;
    if (n > s->cfg.max_batch)
        n = s->cfg.max_batch;
    bs->b.n = n;
    for (uint32_t i = 0; i < n; i++) {
        memset(bs->b.in + (size_t)i * bs->b.in_stride, 0, row_bytes);
        bs->b.in_len[i] = row_bytes;
        if (bs->b.in_ptr) { /* the by-pointer path, as batches from lanes will take it */
            bs->b.in_ptr[i] = bs->b.in + (size_t)i * bs->b.in_stride;
            bs->b.out_ptr[i] = bs->b.out + (size_t)i * bs->b.out_stride;
        }
    }
    int rc = inst_submit(in, &bs->b);
    if (rc == 0) {
        struct oag_batch *done;
        while ((done = inst_reap(in)) == NULL) {
            int fd = inst_event_fd(in);
            if (fd >= 0) {
                struct pollfd pf = { .fd = fd, .events = POLLIN };
                poll(&pf, 1, 100);
            }
        }
        rc = done->whole_rc;
        for (uint32_t i = 0; rc == 0 && i < n; i++)
            if (done->status[i])
                rc = done->status[i];
    }
    bslot_free(s, bs);
    return rc;
}

static int warm_up(struct sup *s, struct inst *in, const struct oag_model *m)
{
    uint32_t row = m ? m->input_dim * 4u : 64u;
    if (row > s->cfg.max_payload)
        row = s->cfg.max_payload;
    uint32_t sizes[SUP_MAX_PREFERRED + 2], n = 0;
    sizes[n++] = 1;
    for (uint32_t i = 0; i < s->cfg.npreferred; i++)
        sizes[n++] = s->cfg.preferred[i];
    sizes[n++] = s->cfg.max_batch;
    for (uint32_t i = 0; i < n; i++) {
        int rc = warm_one(s, in, sizes[i], row);
        if (rc)
            return rc;
    }
    return 0;
}

/* Loads model (if any) and creates + warms the instances for backend ops. */
static int build(struct sup *s, const struct oag_engine_ops *ops, const char *model_dir,
                 struct loaded *out, char *msg, size_t msglen)
{
    memset(out, 0, sizeof *out);
    int rc;
    if (model_dir) {
        rc = oag_model_load(&out->model, model_dir, msg, msglen);
        if (rc)
            return rc;
        snprintf(out->name, sizeof out->name, "%s", out->model->name);
        if (out->model->input_dim * 4u > s->cfg.max_payload ||
            out->model->output_dim * 4u > s->cfg.max_payload) {
            snprintf(msg, msglen, "model %s: rows of %u/%u floats exceed --max-payload %u bytes",
                     model_dir, out->model->input_dim, out->model->output_dim, s->cfg.max_payload);
            oag_model_free(out->model);
            out->model = NULL;
            return -EMSGSIZE;
        }
        /* A lane's payloads are --max-payload (rounded up to 64) apart: only when that is the
         * input row itself are an agent's consecutive rows one range the cuda engine can move
         * with the copy engines; say so where a wider setting gives that up. */
        uint32_t stride = (s->cfg.max_payload + 63u) & ~63u, in_row = out->model->input_dim * 4u;
        if (!strcmp(ops->name, "cuda") && stride != in_row && in_row % 64 == 0 &&
            !s->cfg.copy_rows)
            log_info("model %s: input rows of %u bytes sit %u bytes apart in the lanes "
                     "(--max-payload %u): agents' rows cannot go by the copy engines in runs; "
                     "--max-payload %u would let them", out->name, in_row, stride,
                     s->cfg.max_payload, in_row);
    }
    int devs[SUP_MAX_GPUS], ndev;
    int is_gpu = !strcmp(ops->name, "cuda");
    if (is_gpu && s->cfg.ngpus > 0) {
        ndev = s->cfg.ngpus;
        memcpy(devs, s->cfg.gpus, sizeof(int) * (size_t)ndev);
    } else if (is_gpu) {
        ndev = SUP_MAX_GPUS; /* "all": as many as exist */
        for (int i = 0; i < ndev; i++)
            devs[i] = i;
    } else {
        ndev = s->cfg.instances > 0 && s->cfg.instances <= SUP_MAX_GPUS ? s->cfg.instances : 1;
        for (int i = 0; i < ndev; i++)
            devs[i] = -1;
    }
    struct oag_engine_params p = {
        .max_batch = s->cfg.max_batch, .max_payload = s->cfg.max_payload, .model = out->model,
        .buckets = s->cfg.npreferred ? s->cfg.preferred : NULL, .nbuckets = s->cfg.npreferred,
        .threads = s->cfg.threads,
    };
    rc = 0;
    /* One instance per device for each shard: a shard's batches never wait on another
     * thread's instance (on one GPU, K instances are K sets of streams, graphs and weights). */
    uint32_t nsh = s->nsh ? s->nsh : 1;
    int past_end = 0;
    for (int i = 0; i < ndev && !past_end && !rc; i++) {
        for (uint32_t k = 0; k < nsh; k++) {
            if (out->n == SUP_MAX_INST / 2) {
                snprintf(msg, msglen, "more than %u engine instances (devices x --data-threads)",
                         SUP_MAX_INST / 2);
                rc = -E2BIG;
                break;
            }
            p.device = devs[i];
            struct inst *in;
            rc = inst_create(&in, ops, &p, out->model, !strcmp(ops->name, "cpu"));
            if (rc == 0) {
                in->ordinal = i;
                in->shard = k;
            }
            if (rc == -ENODEV && is_gpu && s->cfg.ngpus == 0 && out->n > 0 && k == 0) {
                rc = 0; /* past the last device */
                past_end = 1;
                break;
            }
            if (rc) {
                snprintf(msg, msglen, "engine %s (device %d): %s", ops->name, devs[i],
                         strerror(-rc));
                break;
            }
            out->inst[out->n++] = in;
            rc = warm_up(s, in, out->model);
            if (rc) {
                snprintf(msg, msglen, "engine %s (device %d): warm-up failed: %s", ops->name,
                         devs[i], strerror(-rc));
                break;
            }
        }
    }
    if (rc) {
        for (uint32_t i = 0; i < out->n; i++)
            inst_destroy(out->inst[i]);
        oag_model_free(out->model);
        memset(out, 0, sizeof *out);
    }
    return rc;
}

/* Adds built instances to the rotation with their batch slots: all of them, or none. Returns 0,
 * or -ENOMEM after destroying ld's instances and model, the rotation being as it was. */
static int adopt(struct sup *s, struct loaded *ld)
{
    uint32_t nslots0 = s->nslots;
    for (uint32_t i = 0; i < ld->n; i++)
        for (uint32_t k = 0; k < ld->inst[i]->max_inflight; k++) {
            struct bslot *bs = bslot_new(s, ld->inst[i]);
            if (!bs) {
                while (s->nslots > nslots0)
                    bslot_free(s, s->slots[--s->nslots]);
                for (uint32_t j = 0; j < ld->n; j++)
                    inst_destroy(ld->inst[j]);
                oag_model_free(ld->model);
                memset(ld, 0, sizeof *ld);
                return -ENOMEM;
            }
            s->slots[s->nslots++] = bs;
        }
    for (uint32_t i = 0; i < ld->n; i++) {
        struct inst *in = ld->inst[i];
        in->model_version = s->model_version;
        in->created_ns = now_ns();
        s->inst[s->ninst++] = in;
        int fd = inst_event_fd(in);
        if (fd >= 0 && in->shard == 0) /* other shards' threads poll their own */
            loop_arm_poll(s, fd, ud_make(UD_ENGINE, 0, s->ninst - 1), POLLIN);
    }
    snprintf(s->model_name, sizeof s->model_name, "%s", ld->name);
    return 0;
}

const struct oag_engine_ops *engines_backend(const struct sup *s)
{
    const char *b = s->cfg.backend;
    if (strcmp(b, "auto"))
        return engine_lookup(b);
    const struct oag_engine_ops *cuda = engine_lookup("cuda");
    if (s->cfg.model && cuda && cuda->devices && cuda->devices() > 0)
        return cuda;
    return engine_lookup(s->cfg.model ? "cpu" : "identity");
}

int engines_start(struct sup *s)
{
    char msg[512] = "";
    const char *b = s->cfg.backend;
    struct loaded ld;
    int rc;
    const struct oag_engine_ops *cpu = engine_lookup("cpu");
    s->engine_ops = engines_backend(s);
    if (!s->engine_ops) {
        log_err("no engine available for this model");
        return -ENODEV;
    }
    int gpu_pick = !strcmp(b, "auto") && s->cfg.model && s->engine_ops != cpu;
    if (!strcmp(b, "auto") && s->cfg.model && s->engine_ops == cpu && engine_lookup("cuda"))
        log_info("no CUDA device; using the cpu engine");
    rc = build(s, s->engine_ops, s->cfg.model, &ld, msg, sizeof msg);
    if (rc && gpu_pick && cpu) { /* auto: a device that would not serve the model */
        log_info("no usable GPU (%s); using the cpu engine", msg);
        s->engine_ops = cpu;
        msg[0] = '\0';
        rc = build(s, cpu, s->cfg.model, &ld, msg, sizeof msg);
    }
    if (rc) {
        log_err("%s", msg[0] ? msg : strerror(-rc));
        return rc;
    }
    s->model_version = 1;
    rc = adopt(s, &ld);
    if (rc) {
        log_err("cannot start engine %s: %s", s->engine_ops->name, strerror(-rc));
        return rc;
    }
    log_info("engine %s: %u instance(s)%s%s, warmed up", s->engine_ops->name, ld.n,
             ld.model ? ", model " : "", ld.model ? ld.model->path : "");
    s->ready = 1;
    inst_fault_arm();
    return 0;
}

/* Destroys retired instances that have nothing in flight (world stopped). */
void engines_reap_retired(struct sup *s)
{
    for (uint32_t i = 0; i < s->ninst;) {
        struct inst *in = s->inst[i];
        if (!in->retired || in->inflight) {
            i++;
            continue;
        }
        int fd = inst_event_fd(in);
        if (fd >= 0 && in->shard == 0)
            loop_cancel(s, ud_make(UD_ENGINE, 0, i));
        for (uint32_t k = 0; k < s->nslots;) {
            if (s->slots[k]->inst == in) {
                bslot_free(s, s->slots[k]);
                s->slots[k] = s->slots[--s->nslots];
            } else {
                k++;
            }
        }
        struct oag_model *m = in->model;
        inst_destroy(in);
        /* Keep indices stable for armed polls: move the last instance here and re-arm it. */
        uint32_t last = --s->ninst;
        if (i != last) {
            s->inst[i] = s->inst[last];
            int lfd = inst_event_fd(s->inst[i]);
            if (lfd >= 0 && s->inst[i]->shard == 0) {
                loop_cancel(s, ud_make(UD_ENGINE, 0, last));
                loop_arm_poll(s, lfd, ud_make(UD_ENGINE, 0, i), POLLIN);
            }
        }
        model_release_if_unused(s, m);
    }
}

/* Main thread: instance idx (shard 0's, or any once the shard threads are gone) has finished
 * batches. */
void engines_event(struct sup *s, uint32_t idx)
{
    if (idx >= s->ninst)
        return;
    struct inst *in = s->inst[idx];
    struct oag_batch *b;
    while ((b = inst_reap(in)) != NULL)
        batcher_complete(&s->sh[in->shard], b);
    int fd = inst_event_fd(in);
    if (fd >= 0 && in->shard == 0)
        loop_arm_poll(s, fd, ud_make(UD_ENGINE, 0, idx), POLLIN);
    if (in->retired && !in->inflight) {
        world_stop(s);
        engines_reap_retired(s);
        world_start(s);
    }
}

int engines_reap_shard(struct shard *sh)
{
    struct sup *s = sh->s;
    int n = 0, idle_retired = 0;
    for (uint32_t i = 0; i < s->ninst; i++) {
        struct inst *in = s->inst[i];
        if (in->shard != sh->id || !in->inflight)
            continue;
        struct oag_batch *b;
        while ((b = inst_reap(in)) != NULL) {
            batcher_complete(sh, b);
            n++;
        }
        idle_retired |= in->retired && !in->inflight;
    }
    if (idle_retired) /* main destroys it (the instance array is main's to change) */
        shard_ask_main(sh);
    return n;
}

int engines_host_register(struct sup *s, void *p, size_t len)
{
    const struct oag_engine_ops *ops = s->engine_ops;
    if (!ops || !ops->host_register)
        return -ENOTSUP;
    /* Registrations serve every engine of the backend: the first healthy instance does it. */
    for (uint32_t i = 0; i < s->ninst; i++)
        if (!s->inst[i]->retired && !s->inst[i]->failed)
            return ops->host_register(s->inst[i]->e, p, len);
    return -ENODEV;
}

int engines_usable_shard(struct shard *sh)
{
    struct sup *s = sh->s;
    for (uint32_t i = 0; i < s->ninst; i++)
        if (s->inst[i]->shard == sh->id && !s->inst[i]->retired && !s->inst[i]->failed)
            return 1;
    return 0;
}

int engines_usable(struct sup *s)
{
    for (uint32_t i = 0; i < s->ninst; i++)
        if (!s->inst[i]->retired && !s->inst[i]->failed)
            return 1;
    return 0;
}

/* Re-creates instances taken out of rotation, once their batches are back (at most once a
 * second each). The loop waits meanwhile: this is rare, and a GPU that keeps failing costs at
 * most one attempt a second. */
void engines_recover(struct sup *s, uint64_t now)
{
    for (uint32_t i = 0; i < s->ninst; i++) {
        struct inst *old = s->inst[i];
        if (!old->failed || old->retired || old->inflight || now < old->retry_ns)
            continue;
        int lent = 0; /* a batch of its slots still running elsewhere (retried) */
        for (uint32_t k = 0; k < s->nslots; k++)
            lent |= s->slots[k]->inst == old && s->slots[k]->busy;
        if (lent)
            continue;
        old->retry_ns = now + 1000000000ull;
        struct inst *in;
        int rc = inst_create(&in, old->ops, &old->params, old->model, old->threaded_req);
        if (rc == 0 && (rc = warm_up(s, in, old->model)) != 0)
            inst_destroy(in);
        if (rc) {
            log_err("engine %s (device %d): re-creation failed: %s; retrying in 1 s",
                    old->ops->name, old->device, strerror(-rc));
            continue;
        }
        in->model_version = old->model_version;
        in->ordinal = old->ordinal;
        in->shard = old->shard;
        in->created_ns = now;
        if (now - old->created_ns < 10000000000ull)
            in->backoff_ns = old->backoff_ns ? (old->backoff_ns * 2 < 60000000000ull
                                                    ? old->backoff_ns * 2 : 60000000000ull)
                                             : 1000000000ull;
        /* Same slot index, same model reference: swap the batch slots over to the new one. */
        for (uint32_t k = 0; k < s->nslots;) {
            if (s->slots[k]->inst != old) {
                k++;
                continue;
            }
            bslot_free(s, s->slots[k]);
            s->slots[k] = bslot_new(s, in);
            if (!s->slots[k])
                s->slots[k] = s->slots[--s->nslots]; /* out of memory: one slot fewer */
            else
                k++;
        }
        int ofd = inst_event_fd(old);
        if (ofd >= 0 && old->shard == 0)
            loop_cancel(s, ud_make(UD_ENGINE, 0, i));
        inst_destroy(old);
        s->inst[i] = in;
        int fd = inst_event_fd(in);
        if (fd >= 0 && in->shard == 0)
            loop_arm_poll(s, fd, ud_make(UD_ENGINE, 0, i), POLLIN);
        log_info("engine %s (device %d) re-created and back in rotation", in->ops->name,
                 in->device);
    }
}

void engines_stop(struct sup *s)
{
    for (uint32_t k = 0; k < s->nslots; k++)
        bslot_free(s, s->slots[k]);
    s->nslots = 0;
    while (s->ninst) {
        struct inst *in = s->inst[--s->ninst];
        struct oag_model *m = in->model;
        inst_destroy(in);
        model_release_if_unused(s, m);
    }
}

/* ---- reload ---------------------------------------------------------------------------- */

static struct {
    pthread_t th;
    int efd;
    struct sup *s;
    char dir[256];
    struct loaded ld;
    int rc;
    char msg[512];
    int ctl_fd;                 /* control client waiting for the outcome, or -1 */
} rl = { .efd = -1, .ctl_fd = -1 };

static void *reload_thread(void *arg)
{
    (void)arg;
    rl.rc = build(rl.s, rl.s->engine_ops, rl.dir, &rl.ld, rl.msg, sizeof rl.msg);
    uint64_t one = 1;
    if (write(rl.efd, &one, sizeof one) < 0)
        rl.rc = rl.rc ? rl.rc : -errno;
    return NULL;
}

int engines_reload(struct sup *s, const char *model, char *msg, size_t msglen)
{
    if (s->reloading) {
        snprintf(msg, msglen, "a reload is already in progress");
        return -EBUSY;
    }
    for (uint32_t i = 0; i < s->ninst; i++)
        if (s->inst[i]->retired) {
            snprintf(msg, msglen, "the previous model still has batches in flight; retry");
            return -EBUSY;
        }
    if (!model || !*model)
        model = s->cfg.model;
    if (!model) {
        snprintf(msg, msglen, "this supervisor serves no model (engine %s)", s->engine_ops->name);
        return -EINVAL;
    }
    if (rl.efd < 0) {
        rl.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (rl.efd < 0)
            return -errno;
    }
    rl.s = s;
    snprintf(rl.dir, sizeof rl.dir, "%s", model);
    rl.msg[0] = '\0';
    if (pthread_create(&rl.th, NULL, reload_thread, NULL) != 0) {
        snprintf(msg, msglen, "cannot start the reload thread");
        return -EAGAIN;
    }
    s->reloading = 1;
    loop_arm_poll(s, rl.efd, ud_make(UD_RELOAD, 0, 0), POLLIN);
    log_info("reloading model from %s", model);
    return 0;
}

int engines_reload_wait_fd(int fd)
{
    rl.ctl_fd = fd;
    return 0;
}

void engines_reload_event(struct sup *s)
{
    uint64_t v;
    if (read(rl.efd, &v, sizeof v) < 0)
        return;
    pthread_join(rl.th, NULL);
    s->reloading = 0;
    char reply[600];
    int status = rl.rc;
    if (rl.rc == 0) {
        /* The previous instances retire only once the new ones are in: a reload that fails
         * here leaves the previous model serving. */
        uint32_t old = s->ninst;
        s->model_version++;
        if (adopt(s, &rl.ld) != 0) {
            s->model_version--;
            status = -ENOMEM;
            snprintf(reply, sizeof reply, "reload: out of memory adopting the new model; the "
                                          "previous model keeps serving");
        } else {
            for (uint32_t i = 0; i < old; i++)
                s->inst[i]->retired = 1;
            snprintf(reply, sizeof reply, "model %s (version %u) from %s now serving",
                     s->model_name, s->model_version, rl.dir);
        }
        log_info("%s", reply);
        engines_reap_retired(s);
        instance_publish(s, 1);
    } else {
        snprintf(reply, sizeof reply, "reload failed, previous model keeps serving: %s", rl.msg);
        log_err("%s", reply);
    }
    if (rl.ctl_fd >= 0) {
        ctl_reply_and_close(s, rl.ctl_fd, reply, status);
        rl.ctl_fd = -1;
    }
}

const struct oag_model *engines_model(const struct sup *s)
{
    for (uint32_t i = 0; i < s->ninst; i++)
        if (!s->inst[i]->retired && s->inst[i]->model)
            return s->inst[i]->model;
    return NULL;
}
