#ifndef C_TICKET_KEYS_H
#define C_TICKET_KEYS_H

/* TLS session ticket keys shared by the workers (see CTicketKeys.c). */
#define CS_TICKET_KEY_SIZE 80
void cs_set_ticket_keys(const unsigned char *keys, int count);
void cs_use_shared_ticket_keys(void *context);

#endif
