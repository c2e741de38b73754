/*
 * The records of a peer-to-peer channel (pt_disc.h): one type byte, then a fixed
 * layout per type; MSG carries one end-to-end envelope. Decoding borrows the input.
 */
#include "discovery/pt_disc.h"

#define P2P_MSG_HDR (1 + 1 + 16 + 4) /* type has_group group_id len */

int pt_p2p_encode(const pt_p2p_rec *r, pt_buf *out)
{
    PT_ASSERT(r && out);
    uint8_t *p;
    switch (r->type) {
    case PT_P2P_HELLO:
    case PT_P2P_ACK:
        if (!(p = pt_buf_extend(out, 17))) return PT_ERR_NOMEM;
        p[0] = r->type;
        memcpy(p + 1, r->type == PT_P2P_HELLO ? r->user_id : r->hash, 16);
        return 0;
    case PT_P2P_MSG:
        if (r->env_len > PT_P2P_ENV_MAX) return PT_ERR_TOO_BIG;
        PT_ASSERT(r->env || r->env_len == 0);
        if (!(p = pt_buf_extend(out, P2P_MSG_HDR + r->env_len))) return PT_ERR_NOMEM;
        p[0] = r->type;
        p[1] = r->has_group ? 1 : 0;
        if (r->has_group) memcpy(p + 2, r->group_id, 16);
        else memset(p + 2, 0, 16);
        pt_put_u32le(p + 18, (uint32_t)r->env_len);
        if (r->env_len) memcpy(p + P2P_MSG_HDR, r->env, r->env_len);
        return 0;
    case PT_P2P_INTRO:
        if (r->name_len < 1 || r->name_len > PT_P2P_NAME_MAX) return PT_ERR_INVAL;
        if (!(p = pt_buf_extend(out, 1 + 32 + 1 + r->name_len + 4 + 64 + 64))) return PT_ERR_NOMEM;
        p[0] = r->type;
        memcpy(p + 1, r->identity_key, 32);
        p[33] = (uint8_t)r->name_len;
        memcpy(p + 34, r->name, r->name_len);
        p += 34 + r->name_len;
        pt_put_u32le(p, r->key_id);
        memcpy(p + 4, r->signed_key, 64);
        memcpy(p + 68, r->sig, 64);
        return 0;
    case PT_P2P_FRIEND_REQ:
        if (r->env_len > PT_P2P_NOTE_MAX) return PT_ERR_TOO_BIG;
        if (!(p = pt_buf_extend(out, 3 + r->env_len))) return PT_ERR_NOMEM;
        p[0] = r->type;
        p[1] = (uint8_t)(r->env_len & 0xff);
        p[2] = (uint8_t)(r->env_len >> 8);
        if (r->env_len) memcpy(p + 3, r->env, r->env_len);
        return 0;
    case PT_P2P_BYE:
    case PT_P2P_PING:
    case PT_P2P_PONG:
    case PT_P2P_FRIEND_ACCEPT:
        if (!(p = pt_buf_extend(out, 1))) return PT_ERR_NOMEM;
        p[0] = r->type;
        return 0;
    default: return PT_ERR_INVAL;
    }
}

int pt_p2p_decode(const uint8_t *p, size_t n, pt_p2p_rec *r)
{
    PT_ASSERT(r && (p || n == 0));
    memset(r, 0, sizeof *r);
    if (n == 0) return PT_ERR_DECODE;
    switch (p[0]) {
    case PT_P2P_HELLO:
        if (n != 17) return PT_ERR_DECODE;
        memcpy(r->user_id, p + 1, 16);
        break;
    case PT_P2P_ACK:
        if (n != 17) return PT_ERR_DECODE;
        memcpy(r->hash, p + 1, 16);
        break;
    case PT_P2P_MSG: {
        if (n < P2P_MSG_HDR || p[1] > 1) return PT_ERR_DECODE;
        bool has_group = p[1] == 1;
        if (!has_group) {
            for (size_t i = 2; i < 18; i++)
                if (p[i]) return PT_ERR_DECODE;
        }
        uint32_t len = pt_get_u32le(p + 18);
        if (len > PT_P2P_ENV_MAX) return PT_ERR_TOO_BIG;
        if (n - P2P_MSG_HDR != len) return PT_ERR_DECODE;
        r->has_group = has_group;
        memcpy(r->group_id, p + 2, 16);
        r->env = p + P2P_MSG_HDR;
        r->env_len = len;
        break;
    }
    case PT_P2P_INTRO: {
        if (n < 34) return PT_ERR_DECODE;
        size_t nl = p[33];
        if (nl < 1 || nl > PT_P2P_NAME_MAX || n != 34 + nl + 4 + 64 + 64) return PT_ERR_DECODE;
        memcpy(r->identity_key, p + 1, 32);
        r->name = p + 34;
        r->name_len = nl;
        const uint8_t *q = p + 34 + nl;
        r->key_id = pt_get_u32le(q);
        memcpy(r->signed_key, q + 4, 64);
        memcpy(r->sig, q + 68, 64);
        break;
    }
    case PT_P2P_FRIEND_REQ: {
        if (n < 3) return PT_ERR_DECODE;
        size_t nl = (size_t)p[1] | (size_t)p[2] << 8;
        if (nl > PT_P2P_NOTE_MAX) return PT_ERR_TOO_BIG;
        if (n != 3 + nl) return PT_ERR_DECODE;
        r->env = p + 3;
        r->env_len = nl;
        break;
    }
    case PT_P2P_BYE:
    case PT_P2P_PING:
    case PT_P2P_PONG:
    case PT_P2P_FRIEND_ACCEPT:
        if (n != 1) return PT_ERR_DECODE;
        break;
    default: return PT_ERR_DECODE;
    }
    r->type = p[0];
    return 0;
}
