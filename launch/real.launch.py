"""ros2 launch robot_rl real.launch.py [learner_host:=IP] [train_config:=FILE] [keys_dir:=DIR] [key_name:=NAME]
                                    [actor_id:=ID] [params_file:=FILE]

Starts robot_rl_actor_node on the robot controller: the robot env (sensors -> observations, actions -> ros2_control
commands through the safety layer) and the actor streaming to the learner. Every other parameter is in
``params_file`` (default: share/robot_rl/config/real.yaml); a launch argument left out keeps the file's value.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from robot_rl.hardware.ros2.config import LAUNCH_FORWARDED, launch_overrides


def _actor(context):
    # Resolved at launch time so that only the arguments actually given become parameters (see launch_overrides).
    given = launch_overrides({name: LaunchConfiguration(name).perform(context) for name in LAUNCH_FORWARDED})
    return [Node(package="robot_rl", executable="robot_rl_actor_node", name="robot_rl_actor", output="screen",
                 emulate_tty=True, parameters=[LaunchConfiguration("params_file").perform(context), given])]


def generate_launch_description():
    default_params = PathJoinSubstitution([FindPackageShare("robot_rl"), "config", "real.yaml"])
    arguments = [DeclareLaunchArgument("params_file", default_value=default_params,
                                       description="robot_rl_actor parameters (topics, rates, limits, QoS)")]
    arguments += [DeclareLaunchArgument(name, default_value="", description=text)
                  for name, text in LAUNCH_FORWARDED.items()]
    return LaunchDescription([*arguments, OpaqueFunction(function=_actor)])
