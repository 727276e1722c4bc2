/* live.c - the config keys that change while kvtierd runs (SIGHUP, admin
 * "config set"), applied to the running server. Apart from server.c so
 * that the admin commands reach it without the event loop. */
#include "daemon/server.h"

#include "daemon/log.h"

void server_apply_live(struct kvt_server *srv, const struct kvt_config *cfg)
{
    log_set_level((int)cfg->log_level);
    srv->cfg.log_level = cfg->log_level;
    srv->cfg.poll_us = cfg->poll_us;
    if (cfg->hot_bytes != srv->cfg.hot_bytes) {
        srv->cfg.hot_bytes = cfg->hot_bytes;
        hot_set_budget(srv->dp.hot, cfg->hot_bytes);
    }
    srv->cfg.hot_high_pct = cfg->hot_high_pct;
    srv->cfg.hot_low_pct = cfg->hot_low_pct;
    tiers_set_watermarks(&srv->tiers, cfg->hot_bytes, cfg->hot_high_pct, cfg->hot_low_pct);
    srv->cfg.hot_quota = cfg->hot_quota;
    srv->cfg.cold_quota = cfg->cold_quota;
    tiers_set_quotas(&srv->tiers, cfg->hot_quota, cfg->cold_quota);
    /* Chunks created from now on; existing ones keep theirs. */
    srv->cfg.outliers = cfg->outliers;
    atomic_store(&srv->dp.outliers, cfg->outliers);
}
