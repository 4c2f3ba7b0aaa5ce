from twisted.application.service import ServiceMaker

exp_server = ServiceMaker("exp-server", "exp.server.tap", "Run the local EXP server.", "exp-server")
