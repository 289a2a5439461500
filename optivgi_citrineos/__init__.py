"""CitrineOS 1.8.3 plugin for opti-vgi.

- :mod:`optivgi_citrineos.translation`: :class:`~optivgi_citrineos.translation.CitrineOSTranslation`,
  the ``citrineos`` translation (entry point in ``optivgi.translations``);
- :mod:`optivgi_citrineos.listener`: the RabbitMQ listener that triggers cycles on charging events
  and correlates the chargers' answers to SetChargingProfile;
- :mod:`optivgi_citrineos.config` and :mod:`optivgi_citrineos.sitefile`: configuration;
- :mod:`optivgi_citrineos.queries`: GraphQL documents and SQL over CitrineOS's tables;


Importing the package reads no environment and opens no connection; install it with the
``citrineos`` extra (httpx, pika, ocpp, websockets).
"""
