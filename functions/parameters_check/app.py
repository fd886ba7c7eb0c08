"""CloudFormation custom resource: refuses parameters the functions would refuse, before anything uses them."""

from makima.lambda_support.parameters_check import make_parameters_check_handler

handler = make_parameters_check_handler()
